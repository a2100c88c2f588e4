import logging

import pytest

from service.outages import Outage


def test_an_outage_is_two_lines_with_the_failures_counted(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mcode.test-outage")
    outage = Outage("postgres", "writer w1", log)
    with caplog.at_level("WARNING", logger="mcode.test-outage"):
        outage.ok()  # nothing to tell
        for _ in range(30):
            outage.failed(ConnectionRefusedError(111, "refused"))
        outage.ok()
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("writer w1: postgres unavailable (ConnectionRefusedError")
    assert lines[1].startswith("writer w1: postgres answers again after") and "(30 failed calls meanwhile)" in lines[1]
    assert not any(r.exc_info for r in caplog.records)
