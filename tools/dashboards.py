"""Generate the Grafana dashboards of salon-sessions with grafana-foundation-sdk.

    .venv/bin/python tools/dashboards.py           # write charts/salon-sessions/dashboards/*.json
                                                   # and copy monitoring/alerts.yaml into the chart
    .venv/bin/python tools/dashboards.py --check   # exit 1 when a shipped file is out of date

The dashboards read the metrics of the operator (`component="operator"`), the API
(`component="api"`) and the session workers (`component="session-worker"`, with
`company_id`); the chart's ServiceMonitor and PodMonitor set those labels. Every expression
is evaluated against a real Prometheus scraping the local stack by
tests/observability/test_prometheus.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "salon-sessions"
DASHBOARD_DIR = CHART / "dashboards"
ALERTS_SOURCE = REPO / "monitoring" / "alerts.yaml"
ALERTS_CHART = CHART / "rules" / "alerts.yaml"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
OP = f'component="operator", {NS}'
API = f'component="api", {NS}'
WORKER = f'component="session-worker", {NS}, company_id=~"$company_id"'
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
DEFAULT_RANGE = "now-1h"
"""The boards open on the last hour: a panel's query cost grows with its steps, and at 1,000
sessions the heaviest (publish latency over every worker's histogram) reads 3.6 million
samples per 60 steps (docs/BENCHMARKS.md)."""
TOP = 10
"""Per-session panels show at most this many sessions (the slowest, the ones down): a line
per session is unreadable and slow at 1,000 sessions (docs/BENCHMARKS.md, "Prometheus series
per session")."""

@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    height: int = 8
    stacked: bool = False
    no_value: str | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    company_variable: bool = False
    tags: tuple[str, ...] = field(default=("salon-sessions",))


def quantiles(metric: str, selector: str, by: str = "", legend: str = "") -> tuple[Target, ...]:
    """p50/p95/p99 of a histogram, aggregated `by` extra labels (besides `le`)."""
    group = f"le, {by}" if by else "le"
    return tuple(
        Target(f"histogram_quantile({q}, sum by ({group}) "
               f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
               f"{legend} {name}".strip())
        for q, name in QUANTILES)


def session_state(metric: str, what: str) -> tuple[Target, ...]:
    """A 0/1 gauge of every worker: how many sessions, how many at 1, and (at most TOP)
    the sessions at 0 by name."""
    per_session = f"max by (company_id) ({metric}{{{WORKER}}})"
    return (Target(f"count({per_session})", "sessions"),
            Target(f"sum({per_session})", what),
            Target(f"bottomk({TOP}, {per_session}) < 1", f"not {what}: {{{{company_id}}}}"))


def rate(metric: str, selector: str, by: str, legend: str) -> Target:
    return Target(f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))", legend)


def failures(metric: str, selector: str, by: str, legend: str, baseline: str,
             baseline_by: str | None = None, baseline_selector: str | None = None) -> Target:
    """A counter of rare failures, which has no series until the first one: falls back to
    `baseline * 0` (a counter that always has series) so that the panel reads 0, not
    "no data", and its expression returns data in a healthy system too."""
    group = by if baseline_by is None else baseline_by
    base_sel = selector if baseline_selector is None else baseline_selector
    base_sum = f"sum by ({group})" if group else "sum"
    return Target(f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval])) or "
                  f"{base_sum} (rate({baseline}{{{base_sel}}}[$__rate_interval])) * 0",
                  legend)


# ---- the dashboards ---------------------------------------------------------------------

OVERVIEW = Board(
    uid="salon-sessions-overview",
    title="Salon sessions / Overview",
    description="Sessions by phase, linked vs connected, pub/sub round trip and publishing.",
    rows=(
        Row("Sessions", (
            Panel("Sessions by phase",
                  "SalonSessions by status.phase, as the leading operator replica sees them.",
                  (Target(f"sum by (phase) (salon_operator_sessions{{{OP}}})", "{{phase}}"),),
                  stacked=True, width=12),
            Panel("Linked vs connected",
                  "linked: WhatsApp accepted the device; connected: the socket is open now. "
                  "A gap between the two lines is sessions that lost their connection.",
                  (Target(f"sum(salon_operator_sessions{{{OP}}})", "sessions"),
                   Target(f"sum(salon_operator_sessions_linked{{{OP}}})", "linked"),
                   Target(f"sum(salon_operator_sessions_connected{{{OP}}})", "connected")),
                  width=8),
            Panel("Operator leader",
                  "Which operator replica holds the Lease (1) and which stand by (0).",
                  (Target(f"max by (pod) (salon_operator_leader{{{OP}}})", "{{pod}}"),),
                  kind="stat", width=4),
        )),
        Row("Pub/sub round trip (ping -> worker -> pong)", (
            Panel("Round trip p50 / p95 / p99 (all sessions)",
                  "The operator pings every session on whatsapp:health:<company>; the worker "
                  "answers on whatsapp:health:pong:<company>. Alert: p99 over 250 ms for 10 "
                  "minutes.",
                  quantiles("salon_operator_pubsub_roundtrip_seconds", OP),
                  unit="s"),
            Panel(f"Round trip per session: the {TOP} slowest (p99 over the interval)",
                  "Each session's last round trips (salon_operator_session_roundtrip_seconds, "
                  "one series per session), the slowest sessions only. The Session workers "
                  "board has p50 / p95 / p99 for chosen sessions.",
                  (Target(f"topk({TOP}, quantile_over_time(0.99, "
                          f"salon_operator_session_roundtrip_seconds{{{OP}}}"
                          "[$__rate_interval]))", "{{company_id}}"),),
                  unit="s"),
            Panel("Health pings by result",
                  "sent, answered, missed (no pong within the timeout), no_receiver (no "
                  "worker subscribed), publish_failed.",
                  (rate("salon_operator_pings_total", OP, "result", "{{result}}"),),
                  unit="ops"),
            Panel("API pub/sub checks p50 / p95 / p99",
                  "/health/pubsub (ping through a worker) and /health/pubsub/simple "
                  "(Redis publish -> subscribe).",
                  quantiles("salon_api_health_roundtrip_seconds", API, by="check",
                            legend="{{check}}"),
                  unit="s"),
        )),
        Row("Publishing events", (
            Panel("Publish attempts by component",
                  "Redis PUBLISH attempts of events (retries included).",
                  (rate("salon_pubsub_publish_attempts_total", NS, "component",
                        "{{component}}"),),
                  unit="ops", width=8),
            Panel("Publish retries and failures",
                  "Retried attempts and events given up on after the last retry "
                  "(alert: any failure).",
                  (failures("salon_pubsub_publish_retries_total", NS, "component, type",
                            "retries {{component}} {{type}}",
                            "salon_pubsub_publish_attempts_total"),
                   failures("salon_pubsub_publish_failures_total", NS, "component, type",
                            "failures {{component}} {{type}}",
                            "salon_pubsub_publish_attempts_total")),
                  unit="ops", width=8, no_value="0"),
            Panel("Publish latency p99 by component",
                  "Time to publish an event successfully, retries included.",
                  (Target("histogram_quantile(0.99, sum by (le, component) "
                          f"(rate(salon_pubsub_publish_seconds_bucket{{{NS}}}"
                          "[$__rate_interval])))", "{{component}}"),),
                  unit="s", width=8),
            Panel("Subscriptions",
                  "1 while each Redis subscription of the operator and the API is live; "
                  "session-worker: 1 while every worker's is (the Session workers board "
                  "names the sessions).",
                  (Target("min by (component, subscriber) (salon_pubsub_subscriber_connected"
                          f'{{{NS}, component!="session-worker"}})',
                          "{{component}} {{subscriber}}"),
                   Target("min by (component) (salon_pubsub_subscriber_connected"
                          f'{{{NS}, component="session-worker"}})', "{{component}}")),
                  width=12),
            Panel("Subscription reconnects",
                  "Subscriptions re-established after Redis went away (messages published "
                  "meanwhile were missed; consumers re-read the state hashes).",
                  (Target("sum by (component) (rate(salon_pubsub_subscriber_reconnects_total"
                          f"{{{NS}}}[$__rate_interval])) or sum by (component) "
                          f"(salon_pubsub_subscriber_connected{{{NS}}}) * 0", "{{component}}"),),
                  unit="ops", width=12, no_value="0"),
        )),
    ),
)

OPERATOR = Board(
    uid="salon-sessions-operator",
    title="Salon sessions / Operator",
    description="Reconciliation, event -> status lag, events consumed and dropped.",
    rows=(
        Row("Reconciliation", (
            Panel("Reconcile duration p50 / p95 / p99 by kind",
                  "statefulset: a SalonSession's StatefulSet applied; cleanup: the finalizer; "
                  "heartbeat: one pass over the session state hashes.",
                  quantiles("salon_operator_reconcile_seconds", OP, by="kind",
                            legend="{{kind}}"),
                  unit="s"),
            Panel("Reconciliations and errors",
                  "Reconciliations per second by kind, and failed ones by kind and reason "
                  "(the HTTP status of the failed call; kopf retries them).",
                  (rate("salon_operator_reconcile_seconds_count", OP, "kind", "{{kind}}"),
                   failures("salon_operator_reconcile_errors_total", OP, "kind, reason",
                            "errors {{kind}} {{reason}}", "salon_operator_reconcile_seconds_count",
                            baseline_by="kind")),
                  unit="ops", no_value="0"),
        )),
        Row("Status", (
            Panel("Event -> status lag p50 / p95 / p99",
                  "From an event's timestamp (worker clock) to its status patch being "
                  "accepted by the API server.",
                  quantiles("salon_operator_event_status_lag_seconds", OP),
                  unit="s", width=8),
            Panel("Status patches by result",
                  "Coalesced status patches (ok, or the HTTP status of a failure).",
                  (rate("salon_operator_status_patches_total", OP, "result", "{{result}}"),),
                  unit="ops", width=8),
            Panel("Kubernetes Events by result",
                  "Events posted for phase changes.",
                  (rate("salon_operator_kube_events_total", OP, "result", "{{result}}"),),
                  unit="ops", width=8),
        )),
        Row("Events from the workers", (
            Panel("Events consumed by type",
                  "Events decoded from whatsapp:events:<company>, by consumer (operator, api).",
                  (rate("salon_events_consumed_total", NS, "consumer, type",
                        "{{consumer}} {{type}}"),),
                  unit="ops", stacked=True),
            Panel("Events dropped and rejected",
                  "dropped: the decoder refused the message (malformed, unknown version...); "
                  "rejected: the operator refused a decoded event (stale seq, unknown "
                  "session, unknown pong...).",
                  (failures("salon_events_dropped_total", NS, "consumer, reason",
                            "dropped {{consumer}} {{reason}}", "salon_events_consumed_total",
                            baseline_by="consumer"),
                   failures("salon_operator_events_rejected_total", OP, "reason",
                            "rejected {{reason}}", "salon_events_consumed_total",
                            baseline_by="consumer")),
                  unit="ops", no_value="0"),
            Panel("Heartbeats lost and cleanups",
                  "Session state hashes that expired (worker gone), finalizer cleanups by "
                  "outcome.",
                  (Target(f"sum(increase(salon_operator_heartbeats_lost_total{{{OP}}}"
                          "[$__rate_interval]))", "heartbeats lost"),
                   Target(f"sum by (result) (increase(salon_operator_cleanups_total{{{OP}}}"
                          "[$__rate_interval])) or sum(increase("
                          f"salon_operator_heartbeats_lost_total{{{OP}}}[$__rate_interval])) * 0",
                          "cleanup {{result}}")),
                  width=24, no_value="0"),
        )),
    ),
)

API_BOARD = Board(
    uid="salon-sessions-api",
    title="Salon sessions / Onboarding API",
    description="HTTP latency and traffic, WebSocket clients, pairing codes.",
    rows=(
        Row("HTTP", (
            Panel("Request latency p50 / p95 / p99",
                  "All HTTP requests of the onboarding API and page.",
                  quantiles("salon_api_request_seconds", API), unit="s", width=8),
            Panel("Request latency p99 by route",
                  "By route template (never by company id).",
                  (Target("histogram_quantile(0.99, sum by (le, method, route) "
                          f"(rate(salon_api_request_seconds_bucket{{{API}}}"
                          "[$__rate_interval])))", "{{method}} {{route}}"),),
                  unit="s", width=8),
            Panel("Requests by status",
                  "Requests per second by HTTP status.",
                  (rate("salon_api_request_seconds_count", API, "status", "{{status}}"),),
                  unit="reqps", stacked=True, width=8),
        )),
        Row("Live page", (
            Panel("WebSocket clients",
                  "Onboarding pages connected right now.",
                  (Target(f"sum(salon_api_websocket_clients{{{API}}})", "clients"),),
                  kind="stat", width=6),
            Panel("WebSocket connections and drops",
                  "Connections by outcome; clients the server dropped (slow, dead, over the "
                  "per-company limit).",
                  (rate("salon_api_websocket_connections_total", API, "outcome",
                        "{{outcome}}"),
                   failures("salon_api_websocket_clients_dropped_total", API, "reason",
                            "dropped {{reason}}", "salon_api_websocket_connections_total",
                            baseline_by="")),
                  unit="ops", width=9, no_value="0"),
            Panel("Events routed and fanned out",
                  "Events received from Redis, and queued to WebSocket clients.",
                  (rate("salon_api_events_routed_total", API, "type", "routed {{type}}"),
                   rate("salon_api_events_fanned_out_total", API, "type",
                        "fanned out {{type}}")),
                  unit="ops", width=9),
        )),
        Row("Onboarding", (
            Panel("Pairing-code requests by outcome",
                  "Pairing codes requested through the API.",
                  (failures("salon_api_pairing_code_requests_total", API, "outcome",
                            "{{outcome}}", "salon_api_request_seconds_count",
                            baseline_by=""),),
                  unit="ops"),
            Panel("Health check failures",
                  "/health/pubsub round trips that got no answer, by reason.",
                  (failures("salon_api_health_failures_total", API, "check, reason",
                            "{{check}} {{reason}}", "salon_api_health_roundtrip_seconds_count",
                            baseline_by="check"),),
                  unit="ops", no_value="0"),
        )),
    ),
)

WORKERS = Board(
    uid="salon-sessions-workers",
    title="Salon sessions / Session workers",
    description="Per session: connection, lock, driver events, messages, post-connect hook.",
    company_variable=True,
    rows=(
        Row("Connection", (
            Panel("Connected",
                  "Sessions whose WhatsApp socket is open, of the chosen sessions; the "
                  f"sessions not connected by name (at most {TOP}).",
                  session_state("salon_worker_connected", "connected"),
                  width=8),
            Panel("Linked",
                  "Sessions whose device is linked; the sessions not linked by name (at "
                  f"most {TOP}).",
                  session_state("salon_worker_linked", "linked"),
                  width=8),
            Panel("Lock held",
                  "Sessions whose worker holds the session's lock (one live connection per "
                  f"session); the sessions without by name (at most {TOP}).",
                  session_state("salon_worker_lock_held", "lock held"),
                  width=8),
        )),
        Row("Activity", (
            Panel("Driver events by kind",
                  "Facts reported by the driver (QrCode, PairSuccess, Connected, "
                  "Disconnected...).",
                  (rate("salon_worker_driver_events_total", WORKER, "kind", "{{kind}}"),),
                  unit="ops", stacked=True, width=8),
            Panel("Health pings answered",
                  "Pongs sent by the chosen sessions' workers, together.",
                  (Target(f"sum(rate(salon_worker_pings_answered_total{{{WORKER}}}"
                          "[$__rate_interval]))", "pongs"),),
                  unit="ops", width=8),
            Panel("Rejected input",
                  "Commands and messages refused as bad input, by source and reason.",
                  (failures("salon_worker_rejected_total", WORKER, "source, reason",
                            "{{source}} {{reason}}", "salon_worker_pings_answered_total",
                            baseline_by=""),),
                  unit="ops", width=8, no_value="0"),
            Panel("Messages",
                  "Inbound messages written to the stream (by sender kind) and outbound "
                  "send results.",
                  (rate("salon_worker_inbound_messages_total", WORKER, "sender",
                        "inbound {{sender}}"),
                   rate("salon_worker_outbound_results_total", WORKER, "status",
                        "outbound {{status}}")),
                  unit="ops", width=12),
            Panel("Post-connect hook attempts",
                  "Calls of the post-connect webhook by result (retried, never blocking).",
                  (failures("salon_worker_post_connect_hook_attempts_total", WORKER,
                            "hook, result", "{{hook}} {{result}}",
                            "salon_worker_pings_answered_total", baseline_by=""),),
                  unit="ops", width=12, no_value="0"),
        )),
        Row("Health pings (operator -> worker -> operator)", (
            Panel(f"Round trip p50 / p95 / p99 per session (at most {TOP} sessions each)",
                  "Quantiles over the interval of each chosen session's last round trips "
                  "(salon_operator_session_roundtrip_seconds), the slowest sessions.",
                  tuple(Target(f"topk({TOP}, quantile_over_time({q}, "
                               "salon_operator_session_roundtrip_seconds"
                               f'{{{OP}, company_id=~"$company_id"}}[$__rate_interval]))',
                               f"{{{{company_id}}}} {name}") for q, name in QUANTILES),
                  unit="s", width=24),
        )),
    ),
)

BOARDS: tuple[Board, ...] = (OVERVIEW, OPERATOR, API_BOARD, WORKERS)


# ---- building ---------------------------------------------------------------------------

def _query(target: Target, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(target.expr).legend_format(target.legend)
            .ref_id(ref).datasource(DATASOURCE).range())


def _panel(spec: Panel) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = (stat.Panel()
                   .graph_mode(common.BigValueGraphMode.AREA)
                   .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"])))
    else:
        builder = (timeseries.Panel()
                   .line_width(1).fill_opacity(10 if not spec.stacked else 40)
                   .legend(common_b.VizLegendOptions().show_legend(True)
                           .display_mode(common.LegendDisplayMode.LIST)
                           .placement(common.LegendPlacement.BOTTOM)))
        if spec.stacked:
            builder = builder.stacking(common_b.StackingConfig()
                                       .mode(common.StackingMode.NORMAL))
    builder = (builder.title(spec.title).description(spec.description).unit(spec.unit)
               .datasource(DATASOURCE).span(spec.width).height(spec.height))
    if spec.no_value is not None:
        builder = builder.no_value(spec.no_value)
    for i, target in enumerate(spec.targets):
        builder = builder.with_target(_query(target, chr(ord("A") + i)))
    return builder


def build(board: Board) -> dict[str, Any]:
    builder = (dash.Dashboard(board.title).uid(board.uid).description(board.description)
               .tags(list(board.tags)).refresh("30s").time(DEFAULT_RANGE, "now")
               .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable())
    builder = builder.with_variable(
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    builder = builder.with_variable(
        dash.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
        .query("label_values(salon_operator_leader, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*"))
    if board.company_variable:
        builder = builder.with_variable(
            dash.QueryVariable("company_id").label("Session").datasource(DATASOURCE)
            .query('label_values(salon_worker_connected{namespace=~"$namespace"}, company_id)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
            .all_value(".*"))
    for row in board.rows:
        builder = builder.with_row(dash.Row(row.title))
        for panel in row.panels:
            builder = builder.with_panel(_panel(panel))
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    for number, panel in enumerate(encoded["panels"], start=1):
        panel["id"] = number  # unique ids (panel links, "view panel" URLs)
    return encoded


def render(board: Board) -> str:
    return json.dumps(build(board), indent=2, sort_keys=True) + "\n"


def dashboard_path(board: Board) -> Path:
    return DASHBOARD_DIR / f"{board.uid}.json"


# ---- reading the shipped JSON (tests, previews) --------------------------------------------

def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with targets, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels", []) if p.get("targets"))
        elif panel.get("targets"):
            yield panel


def iter_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL expression) of every target."""
    for panel in iter_panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def substitute(expr: str, rate_interval: str = "5m", **variables: str) -> str:
    """What Grafana sends to Prometheus: `$__rate_interval` (and `$__interval`) replaced by
    `rate_interval`, template variables by the given values (`.*`, i.e. All, by default)."""
    text = expr.replace("${__rate_interval}", rate_interval)
    text = text.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)

    def var(m: re.Match[str]) -> str:
        return variables.get(m.group(1) or m.group(2), ".*")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, text)


def load_shipped() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 when out of date")
    args = parser.parse_args(argv)
    stale: list[str] = []
    wanted = {dashboard_path(b): render(b) for b in BOARDS}
    for path, text in wanted.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    extra = set(DASHBOARD_DIR.glob("*.json")) - set(wanted)
    stale += [f"{p.relative_to(REPO)} (not generated)" for p in sorted(extra)]
    if args.check:
        if ALERTS_CHART.read_bytes() != ALERTS_SOURCE.read_bytes():
            stale.append(str(ALERTS_CHART.relative_to(REPO)))
        if stale:
            print("out of date (run python tools/dashboards.py):\n  " + "\n  ".join(stale),
                  file=sys.stderr)
            return 1
        return 0
    for path in extra:
        path.unlink()
    ALERTS_CHART.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ALERTS_SOURCE, ALERTS_CHART)
    for path in wanted:
        print(f"wrote {path.relative_to(REPO)}")
    print(f"wrote {ALERTS_CHART.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
