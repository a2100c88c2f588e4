"""Faults caused for real under load (loadtests/faults.py at a lower rate and with shorter
faults): the service as deployed, on a Redis (or a 6-node Redis Cluster) and a PostgreSQL of the
test's own that are stopped, killed, paused, failed over and resharded, with repeats and signed
orders throughout. Counted by click id."""

import dataclasses
import shutil

import pytest

from loadtests import faults as harness
from tests.faults import OwnPostgres

pytestmark = pytest.mark.skipif(
    not (OwnPostgres.available() and shutil.which("redis-server")),
    reason="fault tests need PostgreSQL's initdb and redis-server installed",
)
# Under the work tree, not the test's tmp_path: PostgreSQL runs as its own user, which must reach it.
LOCAL = harness.ROOT / ".local" / "test-faults"
# (a killed master is down until its replica takes over, however short the fault is meant to be)
SHORT = {"postgres": 5, "no AOF": 3, "everysec": 3, "PAUSE": 2, "writer kill": 3, "master": 5, "resharded": 0}


def short(scenario: harness.Scenario) -> harness.Scenario:
    seconds = next(v for k, v in SHORT.items() if k in scenario.name)
    return dataclasses.replace(scenario, seconds=seconds)


@pytest.mark.parametrize("scenario", [short(s) for s in harness.SCENARIOS], ids=lambda s: s.name)
async def test_a_fault_under_load_loses_nothing_counts_nothing_twice_misjudges_no_order(
    scenario: harness.Scenario,
) -> None:
    result = await harness.run_scenario(scenario, rate=300, warmup_s=2, settle_s=4, local=LOCAL)
    print(result)
    assert result["answered"] > 0 and result["refused"] == 0
    assert result["repeats sent"] == result["stored ERR_DUP"]
    counts = {k: result[k] for k in ("lost", "doubled", "repeats stored valid", "first visits stored as a repeat",
                                     "wrong verdicts", "orders unanswered")}
    assert counts == dict.fromkeys(counts, 0)
    assert set(result["orders"]) <= {200, 201, 503}  # type: ignore[arg-type]
