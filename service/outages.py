"""A dependency's outage, told in a few log lines rather than one per failed call (which would
bury the log): when it starts and when it ends, with the failures counted in between, or, where
nothing proves it over, once every little while."""

from __future__ import annotations

import logging
import time

from service import metrics


class Outage:
    def __init__(self, dependency: str, who: str, log: logging.Logger) -> None:
        self.dependency = dependency
        self.who = who
        self.log = log
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        metrics.DEPENDENCY_ERRORS.labels(self.dependency).inc()
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s: %s unavailable (%s: %s)", self.who, self.dependency, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning("%s: %s answers again after %.1f s (%d failed calls meanwhile)", self.who,
                             self.dependency, time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0


class ThrottledOutages:
    """At most one line per dependency every `every_s`, with the failures since the last line."""

    def __init__(self, log: logging.Logger, failures: str, every_s: float = 10.0) -> None:
        self.log = log
        self.failures = failures
        self.every_s = every_s
        self.logged_at: dict[str, float] = {}
        self.unlogged: dict[str, int] = {}

    def note(self, dependency: str, exc: BaseException, now: float) -> None:
        metrics.DEPENDENCY_ERRORS.labels(dependency).inc()
        self.unlogged[dependency] = self.unlogged.get(dependency, 0) + 1
        if now - self.logged_at.get(dependency, -self.every_s) >= self.every_s:
            self.log.warning("%s unavailable (%s: %s): %d %s since the last such line", dependency,
                             type(exc).__name__, exc, self.unlogged[dependency], self.failures)
            self.logged_at[dependency] = now
            self.unlogged[dependency] = 0
