"""deploy/ and docker-compose.yml, checked by the tools that will read them: promtool for the alert
rules, their unit tests, the Prometheus configuration and every dashboard query; Compose for the
compose file. Where a tool is missing the test says which and how to get it, and is skipped."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from service import metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mcode.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

# What Prometheus itself adds to what it scrapes, and the labels of its ALERTS series.
PROMETHEUS_METRICS = {"up", "ALERTS"}
PROMETHEUS_LABELS = {"job", "instance", "alertname", "alertstate", "severity"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return path


def compose() -> list[str]:
    # The v2 plugin first, as the README's commands are written; `config` needs no Docker engine.
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor docker-compose is installed (Debian: apt-get install docker-compose)")


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [r for g in load_yaml(DEPLOY / "alerts.yml")["groups"] for r in g["rules"]]
    return rules


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panel_targets() -> list[tuple[str, str]]:
    """(panel title and refId, expr) of every query on the dashboard."""
    return [(f"{p['title']} {t['refId']}", t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


# Grafana's own interval variables; Prometheus sees a duration in their place.
GRAFANA_INTERVALS = re.compile(r"\$\{?__(?:rate_interval|interval|range)\b\}?")


def as_promql(expr: str) -> str:
    promql = GRAFANA_INTERVALS.sub("5m", expr)
    # any other $variable would reach Prometheus as is, and only a dashboard with that variable could run it
    assert "$" not in promql, f"unknown Grafana variable in {expr!r}"
    return promql


@functools.cache
def exposed() -> tuple[frozenset[str], frozenset[str]]:
    """Sample and label names of a real /metrics answer, every family being present from the start."""
    names, labels = set(PROMETHEUS_METRICS), set(PROMETHEUS_LABELS)
    for line in metrics.exposition(0.0).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            names.add(name.split(" ")[0])
            labels.update(re.findall(r'(\w+)="', rest.rpartition("}")[0]))
    return frozenset(names), frozenset(labels)


GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def names_in(promql: str) -> tuple[set[str], set[str]]:
    """Metric and label names a PromQL expression refers to: enough of a parse for our own queries
    (a typo in one is a panel that silently shows nothing, or an alert that never fires)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    labels = {m for body in re.findall(r"\{([^}]*)\}", text) for m in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body)}
    labels |= {name.strip() for group in GROUPING.findall(text) for name in group.split(",") if name.strip()}
    text = GROUPING.sub(" ", re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text))
    words = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {w for w in words if w not in KEYWORDS}, labels


def test_alert_rules_pass_promtool_check() -> None:
    out = run(promtool(), "check", "rules", str(DEPLOY / "alerts.yml"))
    assert f"{len(alert_rules())} rules found" in out, out


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested = {
        case["alertname"]
        for group in load_yaml(DEPLOY / "alerts_test.yml")["tests"]
        for case in group.get("alert_rule_test", [])
    }
    assert {r["alert"] for r in alert_rules()} <= tested


def test_alert_unit_tests_pass() -> None:
    run(promtool(), "test", "rules", str(DEPLOY / "alerts_test.yml"))


def test_prometheus_config_passes_promtool_check(tmp_path: Path) -> None:
    config = load_yaml(DEPLOY / "prometheus.yml")
    # In the container the rule files sit wherever the compose file mounts them; here they are
    # deploy/'s, so a path that exists only in /etc/prometheus is checked all the same.
    rule_files = [DEPLOY / Path(p).name for p in config.get("rule_files", [])]
    assert rule_files and all(p.is_file() for p in rule_files), rule_files
    config["rule_files"] = [str(p) for p in rule_files]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    run(promtool(), "check", "config", str(copy))


def test_down_alert_covers_every_scrape_job() -> None:
    (down,) = [r["expr"] for r in alert_rules() if r["alert"] == "McodeDown"]
    jobs = re.fullmatch(r'up\{job=~"([^"]+)"\} == 0', down)
    assert jobs, down
    for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]:
        assert re.fullmatch(jobs[1], job["job_name"]), job["job_name"]


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    targets = panel_targets()
    assert targets
    # promtool parses rule expressions without a server: each query becomes a recording rule.
    rules = [{"record": f"dashboard:query{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(targets)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run(promtool(), "check", "rules", str(path))
    assert f"{len(rules)} rules found" in out, out


def test_queries_name_only_what_the_service_exposes() -> None:
    known_names, known_labels = exposed()
    queries = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    queries += [(f"panel {where}", as_promql(expr)) for where, expr in panel_targets()]
    for where, expr in queries:
        names, labels = names_in(expr)
        assert names, (where, expr)
        assert names <= known_names, (where, names - known_names)
        assert labels <= known_labels, (where, labels - known_labels)


def test_dashboard_panels_are_complete() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    provisioned = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    # the variable's default is the datasource compose provisions, so the board opens showing data
    assert variable["current"]["value"] in {d["uid"] for d in provisioned}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel.get("title"), panel["id"]
        assert panel.get("datasource", {}).get("type") == "prometheus", panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr") and target.get("refId"), panel["title"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for subject in ("reason", "latency", "backlog", "written", "dependency", "events", "attribution"):
        assert subject in titles, subject


def test_compose_file_is_valid() -> None:
    tool = compose()
    run(*tool, "config", "-q")
    run(*tool, "--profile", "monitoring", "config", "-q")
    services = set(run(*tool, "--profile", "monitoring", "config", "--services").split())
    assert services == {"postgres", "redis", "service", "prometheus", "grafana"}


def test_monitoring_starts_only_when_asked() -> None:
    # docker-compose 1.29 lists every service in `config --services` whatever the profile, so the
    # profiles are read from the file itself
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    profiles = {name: tuple(spec.get("profiles", ())) for name, spec in services.items()}
    assert profiles == {
        "postgres": (), "redis": (), "service": (), "prometheus": ("monitoring",), "grafana": ("monitoring",),
    }


def test_compose_keeps_state_in_named_volumes() -> None:
    spec = load_yaml(ROOT / "docker-compose.yml")
    services, named = spec["services"], set(spec["volumes"])

    def mounts(service: str) -> dict[str, str]:
        return {target: source for source, target, *_ in (v.split(":") for v in services[service]["volumes"])}

    assert mounts("postgres")["/var/lib/postgresql/data"] in named
    # redis.conf names no dir: the AOF lands in whatever --dir says, which must be the volume
    command = services["redis"]["command"]
    assert command[command.index("--dir") + 1] in mounts("redis")
    assert mounts("redis")[command[command.index("--dir") + 1]] in named
    assert mounts("redis")["/usr/local/etc/redis/redis.conf"] == "./deploy/redis.conf"
    spool = services["service"]["environment"].get("MCODE_SPOOL_DIR", "/var/tmp/mcode-spool")
    assert mounts("service")[spool] in named
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert mounts("prometheus")["/etc/prometheus/alerts.yml"] == "./deploy/alerts.yml"
    provider = load_yaml(PROVISIONING / "dashboards" / "mcode.yml")["providers"][0]
    assert mounts("grafana")[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
