"""The Grafana dashboards: generated from tools/dashboards.py (grafana-foundation-sdk) and
shipped unchanged; valid Grafana JSON; every topic of the issue covered; every metric they
read is one a component exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.observability.promql import metric_names
from tools import dashboards

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "salon_sessions" / p for p in (
    "core/metrics.py", "operator/metrics.py", "api/metrics.py", "worker/metrics.py")]
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def shipped() -> dict[str, dict[str, Any]]:
    return dashboards.load_shipped()


def exported_families() -> set[str]:
    """Metric family names declared in the components' metrics modules."""
    names: set[str] = set()
    for path in SOURCES:
        names |= set(re.findall(r'"(salon_[a-z0-9_]+)"', path.read_text()))
    return names


def test_shipped_dashboards_are_the_generated_ones() -> None:
    assert dashboards.main(["--check"]) == 0, "run: .venv/bin/python tools/dashboards.py"
    assert set(shipped()) == {b.uid for b in dashboards.BOARDS}


@pytest.mark.parametrize("uid", [b.uid for b in dashboards.BOARDS])
def test_dashboard_json_is_well_formed(uid: str) -> None:
    board = shipped()[uid]
    assert board["uid"] == uid
    assert board["title"].startswith("Salon sessions / ")
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["includeAll"] is True
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0
    panels = list(dashboards.iter_panels(board))
    assert panels
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat")
        assert panel["title"]
        assert panel["description"], f"{panel['title']}: say what it shows"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].count("(") == target["expr"].count(")")
            assert 'namespace=~"$namespace"' in target["expr"], target["expr"]
            assert target.get("legendFormat"), panel["title"]
    # overlapping panels would hide each other
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_dashboards_cover_the_issue() -> None:
    """pub/sub round trip p50/p95/p99 per session (the slowest) and overall, publish retries and
    failures, sessions by phase, linked vs connected, event -> status lag, reconcile
    duration and errors, WebSocket clients, API latency."""
    exprs = [e for b in shipped().values() for _, e in dashboards.iter_exprs(b)]
    text = "\n".join(exprs)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    for q in ("0.5", "0.95", "0.99"):
        assert has(rf"histogram_quantile\({q}, sum by \(le\) \(rate\("
                   r"salon_operator_pubsub_roundtrip_seconds_bucket")
        # per session: a gauge of each session's last round trip (one series per session,
        # not a histogram's 17), the slowest sessions only
        assert has(rf"topk\(10, quantile_over_time\({q}, "
                   r"salon_operator_session_roundtrip_seconds\{")
        assert has(rf"histogram_quantile\({q}, .*salon_operator_event_status_lag_seconds")
        assert has(rf"histogram_quantile\({q}, .*salon_operator_reconcile_seconds_bucket")
        assert has(rf"histogram_quantile\({q}, .*salon_api_request_seconds_bucket")
    for metric in ("salon_pubsub_publish_retries_total", "salon_pubsub_publish_failures_total",
                   "salon_operator_sessions{", "salon_operator_sessions_linked",
                   "salon_operator_sessions_connected", "salon_operator_reconcile_errors_total",
                   "salon_api_websocket_clients"):
        assert metric in text, metric
    assert has(r"sum by \(phase\) \(salon_operator_sessions\{")


def test_every_metric_read_is_exported_by_a_component() -> None:
    exported = exported_families()
    for uid, board in shipped().items():
        for title, expr in dashboards.iter_exprs(board):
            for name in metric_names(expr):
                base = name
                for suffix in SUFFIXES:
                    base = base.removesuffix(suffix)
                assert base in exported or name in exported, f"{uid} / {title}: {name}"


def test_substitute_variables() -> None:
    expr = 'rate(x{namespace=~"$namespace", c=~"${company_id}"}[$__rate_interval])'
    assert dashboards.substitute(expr, "2m") == 'rate(x{namespace=~".*", c=~".*"}[2m])'
    assert dashboards.substitute(expr, namespace="salons").startswith(
        'rate(x{namespace=~"salons"')


def test_configmap_payload_is_the_file() -> None:
    for path in sorted(dashboards.DASHBOARD_DIR.glob("*.json")):
        assert json.loads(path.read_text())["uid"] == path.stem
