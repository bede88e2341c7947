"""The Prometheus files in deploy/prometheus: promtool checks the rules and the configuration, and runs the
rules' unit tests (orthanc-jobs-rules.test.yml: each alert made to fire, and not to fire); the rules read
only metrics the job-service exposes.

promtool comes with Debian's prometheus package (scripts/install-system-deps.sh); without it the tests that
need it are skipped. It resolves no host name: the scrape targets are only parsed.
"""

from typing import Any

import pytest

from tests.unit.monitoring import (
    PROMETHEUS,
    RULES,
    SCRAPE_SERIES,
    exposed_series,
    metric_names,
    promtool,
    recorded_series,
    rule_expressions,
    rules,
    succeeds,
)

RULES_TESTS = PROMETHEUS / "orthanc-jobs-rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"


def test_rules_are_valid() -> None:
    succeeds(promtool("check", "rules", str(RULES)))


def test_rules_unit_tests_pass() -> None:
    succeeds(promtool("test", "rules", str(RULES_TESTS)))


def test_config_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", str(CONFIG))
    succeeds(result)
    assert "1 rule files found" in result.stdout


def test_rules_read_only_what_the_service_exposes() -> None:
    """A metric renamed in core/metrics.py, and not here, fails this test."""
    known = exposed_series() | SCRAPE_SERIES | recorded_series()
    unknown = {name: sorted(metric_names(expr) - known) for name, expr in rule_expressions().items()}
    assert {name: names for name, names in unknown.items() if names} == {}
    for name, expr in rule_expressions().items():
        assert metric_names(expr), f"{name} reads no metric"


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    yaml = pytest.importorskip("yaml")
    cases = [
        case for test in yaml.safe_load(RULES_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for alert in _alerts():
        name = alert["alert"]
        assert any(case["alertname"] == name and case.get("exp_alerts") for case in cases), name
        assert any(case["alertname"] == name and not case.get("exp_alerts") for case in cases), name
