"""A dependency's outage, told in two log lines: when it starts and when it ends, with how
many calls failed in between (a line per failed call would bury the log during an outage)."""

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
