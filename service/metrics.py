"""Every Prometheus metric, defined once; counted across worker processes."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from service.store.clicks import REASON_COLUMNS

CLICK_REASONS = ("valid", *REASON_COLUMNS)
EVENT_TYPES = ("cart", "order", "payment", "refund")
EVENT_STATUSES = ("attributed", "not_attributed", "recorded", "rejected")
ATTRIBUTION_RESULTS = ("attributed", "ERR_NO_CLICK", "ERR_INVALID_CLICK", "ERR_WINDOW")
DEPENDENCIES = ("redis", "postgres")

CLICKS = Counter("mcode_clicks", "Clicks on /e/{code} by reason (valid for valid).", ["reason"])
REDIRECT_SECONDS = Histogram(
    "mcode_redirect_duration_seconds",
    "Time to answer GET/HEAD /e/{code}.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENTS = Counter("mcode_events", "Order events by type and answered status.", ["type", "status"])
ATTRIBUTIONS = Counter("mcode_attributions", "Order attribution results.", ["result"])
DEPENDENCY_ERRORS = Counter("mcode_dependency_errors", "Failed calls to Redis or Postgres.", ["dependency"])
CLICKS_WRITTEN = Counter("mcode_clicks_written", "Clicks the writer committed to Postgres.")
CLICKS_REJECTED = Counter("mcode_clicks_rejected", "Stream entries set aside: not a click, or refused by Postgres.")

for _reason in CLICK_REASONS:
    CLICKS.labels(_reason)
for _type in EVENT_TYPES:
    for _status in EVENT_STATUSES:
        EVENTS.labels(_type, _status)
for _result in ATTRIBUTION_RESULTS:
    ATTRIBUTIONS.labels(_result)
for _dep in DEPENDENCIES:
    DEPENDENCY_ERRORS.labels(_dep)


# How late a redirect's counts may reach the shared metric files (a scrape sees them after this).
FLUSH_S = 0.5


class RedirectTally:
    """The redirect's counts, kept in plain integers and added to the shared metric files at most
    FLUSH_S later. In multiprocess mode each increment is a write to a memory-mapped file
    (with a pid check), and a redirect makes three (its reason, the histogram's sum and bucket):
    a few microseconds a click, against one write per reason and bucket per flush."""

    def __init__(self) -> None:
        self.reasons = dict.fromkeys(CLICK_REASONS, 0)
        # Upper bounds as the histogram has them, +Inf last: a bucket holds what is <= its bound.
        self.bounds: list[float] = list(REDIRECT_SECONDS._upper_bounds)
        self.buckets = [0] * len(self.bounds)
        self.seconds = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, reason: str, seconds: float) -> None:
        self.reasons[reason] += 1
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for reason, n in self.reasons.items():
            if n:
                CLICKS.labels(reason).inc(n)
                self.reasons[reason] = 0
        # prometheus-client has no bulk observe; these are the histogram's own values (one per
        # bucket, and the sum), so the exposition is exactly what observe() would have made.
        for i, n in enumerate(self.buckets):
            if n:
                REDIRECT_SECONDS._buckets[i].inc(n)
                self.buckets[i] = 0
        if self.seconds:
            REDIRECT_SECONDS._sum.inc(self.seconds)
            self.seconds = 0.0


REDIRECTS = RedirectTally()


class _Backlog:
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mcode_click_backlog", "Clicks answered but not yet in Postgres.", value=self.value
        )


def exposition(backlog: float) -> bytes:
    """The text a scrape gets: every worker's counters plus the backlog read from Redis."""
    REDIRECTS.flush()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(_Backlog(backlog))
    return generate_latest(registry)


def serve_in_thread(host: str, port: int) -> None:
    """/metrics for a process that has no web server of its own (`mcode writer`): this process's
    counters, on a thread, so scrapes never wait on its event loop."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, host, registry=registry)
