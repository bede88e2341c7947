"""What the monitoring files of deploy/ ask of Prometheus, and what the job-service exposes: the metric names
of every PromQL expression in the alerting rules and the Grafana dashboard, against those of /metrics."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orthanc_jobs.core.metrics import Metrics
from tests.unit.fake_orthanc import registry_of

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "orthanc-jobs-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "orthanc-jobs-dashboard.json"

# Series Prometheus makes itself for every target, not read from /metrics.
SCRAPE_SERIES = {"up"}

# The series a metric of each type is stored as (prometheus_client writes the _created ones too).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on", "ignoring"}


def promtool(*arguments: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """promtool's result; the test is skipped where it is not installed."""
    command = shutil.which("promtool")
    if command is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: make system-deps)")
    return subprocess.run(
        [command, *arguments], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}:\n{result.stdout}\n{result.stderr}"


def exposed_series() -> set[str]:
    """The series names the service's /metrics holds, or will once a labelled child exists (the `# HELP`
    and `# TYPE` lines name those)."""
    metrics = Metrics(registry_of(["http://127.0.0.1:8001"]))
    text = generate_latest(metrics.collectors).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads, roughly: identifiers that are not functions, keywords,
    label names, strings, ranges or durations."""
    expression = _STRING.sub('""', expression)
    expression = _MATCHERS.sub("{}", expression)
    expression = _RANGE.sub("[]", expression)
    expression = _GROUPING.sub(" ", expression)
    return {name for name in _IDENTIFIER.findall(expression) if name.lower() not in _KEYWORDS}


def rules() -> Iterator[dict[str, Any]]:
    """Every rule, alerting or recording."""
    import yaml

    for group in yaml.safe_load(RULES.read_text())["groups"]:
        yield from group["rules"]


def rule_expressions() -> dict[str, str]:
    """Each rule's expression, by the rule's name (alert or recorded series)."""
    return {rule.get("alert") or rule["record"]: str(rule["expr"]) for rule in rules()}


def recorded_series() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_expressions() -> dict[str, str]:
    """Each query's expression, by panel title and query letter."""
    return {
        f"{panel['title']} ({target['refId']})": target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    }
