"""The alert rules: promtool check and unit tests, the chart's copy, the expression shape
the live evaluation relies on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.promql import metric_names, split_threshold

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "monitoring" / "alerts.yaml"
ALERTS_TEST = REPO / "monitoring" / "alerts_test.yaml"
CHART_ALERTS = REPO / "charts" / "salon-sessions" / "rules" / "alerts.yaml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
REQUIRED = {  # the list: worker unhealthy, disconnected too long, p99, publish failures
    "SalonSessionWorkerDown", "SalonSessionWorkerWithoutLock",
    "SalonSessionDisconnectedTooLong", "SalonPubSubRoundTripP99OverBudget",
    "SalonEventPublishFailures",
}


def rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(),
                                    reason="promtool missing (scripts/bootstrap.sh)")


@needs_promtool
def test_promtool_check_rules() -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    out = subprocess.run([PROMTOOL, "test", "rules", str(ALERTS_TEST)], capture_output=True,
                         text=True, cwd=ALERTS_TEST.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if not case.get("exp_alerts")}
    names = {str(r["alert"]) for r in rules()}
    assert names == fired, f"never seen firing: {names - fired}"
    assert names == quiet, f"never seen quiet: {names - quiet}"


def test_required_alerts_exist_with_severity_and_text() -> None:
    by_name = {str(r["alert"]): r for r in rules()}
    assert set(by_name) >= REQUIRED
    for name, rule in by_name.items():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"critical", "warning", "info"}, name
        assert annotations["summary"], name
        assert annotations["description"], name


def test_alert_expressions_have_a_top_level_threshold() -> None:
    for rule in rules():
        threshold = split_threshold(str(rule["expr"]))
        assert threshold is not None, rule["alert"]
        assert metric_names(threshold.lhs), rule["alert"]


def test_chart_ships_the_same_rules() -> None:
    assert CHART_ALERTS.read_bytes() == ALERTS.read_bytes(), \
        "charts/salon-sessions/rules/alerts.yaml is stale: run python tools/dashboards.py"


@pytest.mark.parametrize(("expr", "lhs", "op", "rhs"), [
    ('up{job="a"} == 0', 'up{job="a"}', "==", "0"),
    ("sum(rate(x[5m])) > 0.25", "sum(rate(x[5m]))", ">", "0.25"),
    ('(a{l=~"x|y"} or b * 0) > 3', '(a{l=~"x|y"} or b * 0)', ">", "3"),
    ("a / b >= bool 1", "a / b", ">=", "1"),
    ('max by (x) (a{l!="v"}) < 1', 'max by (x) (a{l!="v"})', "<", "1"),
])
def test_split_threshold(expr: str, lhs: str, op: str, rhs: str) -> None:
    threshold = split_threshold(expr)
    assert threshold is not None
    assert (threshold.lhs, threshold.op, threshold.rhs) == (lhs, op, rhs)


@pytest.mark.parametrize("expr", ["sum(rate(x[5m]))", 'a{l=">1"}', "a > b"])
def test_split_threshold_none(expr: str) -> None:
    assert split_threshold(expr) is None


def test_metric_names() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, company_id) (rate(salon_a_bucket'
            '{component="operator", namespace=~"$namespace"}[5m]))) or sum by (le) '
            '(salon_b_total) * 0 + on(pod) group_left up')
    assert metric_names(expr) == {"salon_a_bucket", "salon_b_total", "up"}
