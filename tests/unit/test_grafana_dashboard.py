"""The Grafana dashboard in deploy/grafana: a Grafana 10/11 dashboard on a Prometheus chosen by a variable,
whose queries parse (promtool) and read only metrics the job-service exposes."""

import json
import re
from pathlib import Path

from tests.unit.monitoring import (
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    exposed_series,
    metric_names,
    promtool,
    succeeds,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of the dashboard's variables, for promtool to parse the queries.
VARIABLES = {"$__rate_interval": "1m", "$window": "1h", "$server": ".*", "$type": ".*"}
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


def _variables() -> dict[str, dict[str, object]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def test_is_a_grafana_10_or_11_dashboard() -> None:
    loaded = dashboard()
    assert 38 <= loaded["schemaVersion"] <= 40
    assert loaded["uid"] == "orthanc-jobs"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_every_query_uses_the_chosen_prometheus() -> None:
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_server_and_type_variables_list_the_exposed_labels() -> None:
    variables = _variables()
    exposed = exposed_series()
    for name, label in (("server", "server"), ("type", "type")):
        variable = variables[name]
        assert variable["datasource"] == DATASOURCE
        match = LABEL_VALUES.match(str(variable["definition"]))
        assert match and match.group(2) == label, variable["definition"]
        assert match.group(1) in exposed, variable["definition"]
        assert variable["includeAll"] and variable["multi"]


def test_queries_read_only_what_the_service_exposes() -> None:
    """A metric renamed in core/metrics.py, and not here, fails this test."""
    exposed = exposed_series()
    unknown = {title: sorted(metric_names(expr) - exposed) for title, expr in dashboard_expressions().items()}
    assert {title: names for title, names in unknown.items() if names} == {}


def test_the_panels_cover_the_jobs_metrics() -> None:
    read = set().union(*(metric_names(expr) for expr in dashboard_expressions().values()))
    assert read >= {
        "orthanc_jobs_jobs",
        "orthanc_jobs_server_up",
        "orthanc_jobs_finished_total",
        "orthanc_jobs_stuck_jobs",
        "orthanc_jobs_oldest_pending_age_seconds",
        "orthanc_jobs_wait_seconds_bucket",
        "orthanc_jobs_run_seconds_bucket",
        "orthanc_jobs_events_received_total",
        "orthanc_jobs_event_lag_seconds_bucket",
        "orthanc_jobs_webhook_deliveries_total",
        "orthanc_jobs_webhook_attempt_failures_total",
    }
    quantiles = [expr for expr in dashboard_expressions().values() if "histogram_quantile" in expr]
    for histogram in ("orthanc_jobs_wait_seconds", "orthanc_jobs_run_seconds"):
        assert any(f"{histogram}_bucket" in expr and "by (le, type)" in expr for expr in quantiles), histogram


def test_queries_parse(tmp_path: Path) -> None:
    """promtool parses each query, its variables replaced as Grafana does, as a recording rule."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(dashboard_expressions().values()):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        lines += [f"      - record: dashboard_query_{number}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n")
    succeeds(promtool("check", "rules", str(rules), cwd=tmp_path))
