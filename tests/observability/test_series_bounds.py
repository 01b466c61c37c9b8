"""Prometheus series per session stay bounded (issue 16): the worker's and the operator's
real metric classes in a fresh registry, every label path exercised with its whole value set
(benchmarks/series_shapes.py), counted. Fails when someone adds a label without declaring
its bounded value set, a per-session label outside the one gauge allowed, or series beyond
the documented bounds (docs/BENCHMARKS.md, "Prometheus series per session")."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from benchmarks import series_shapes as shapes
from salon_sessions.operator import acl_denials
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.worker.stream_retention import MAX_GROUP_LABELS

WORKER_SERIES_MAX = 160
"""One worker's /metrics with every label value it can ever set and the most consumer groups
exported (8 per bot stream): 157 series. The scrape adds 5 (`up`, `scrape_*`)."""
WORKER_SERIES_TYPICAL_MAX = 90
"""An ordinary connected session (messages in and out, no errors): 84."""
OPERATOR_SERIES_PER_SESSION = 1
"""`salon_operator_session_roundtrip_seconds{company_id}` only."""
OPERATOR_FIXED_MAX = 230


def test_every_label_has_a_declared_bounded_value_set() -> None:
    for registry in (shapes.worker_registry(), shapes.operator_registry(3, refused_sessions=1)):
        for family, names in shapes.labelled(registry):
            declared = shapes.LABELS.get(family)
            assert declared is not None, (
                f"{family} has labels {sorted(names)}: declare each label's bounded value "
                "set in benchmarks/series_shapes.py LABELS (never ids or error texts)")
            assert names <= set(declared), f"{family}: undeclared {names - set(declared)}"
            per_session = names & shapes.PER_SESSION_LABELS
            assert not per_session or family in shapes.PER_SESSION_FAMILIES, (
                f"{family} carries {per_session}: one series per session at most, in a gauge "
                "(the scrape already adds company_id to every worker series)")


def test_worker_series_are_bounded() -> None:
    everything = shapes.count(shapes.worker_registry())
    most_groups = shapes.count(shapes.worker_registry(groups_per_stream=MAX_GROUP_LABELS + 5))
    typical = shapes.count(shapes.worker_registry(everything=False))
    assert most_groups <= WORKER_SERIES_MAX, shapes.series_by_family(
        shapes.worker_registry(groups_per_stream=MAX_GROUP_LABELS))
    assert everything < most_groups
    assert typical <= WORKER_SERIES_TYPICAL_MAX


def test_no_worker_histogram_is_multiplied_by_a_label() -> None:
    """A worker's series are per session already: a histogram there (buckets + 2 series)
    must not be multiplied again by a label with more than one value per process."""
    for metric in shapes.families(shapes.worker_registry()):
        if metric.type != "histogram":
            continue
        children = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                    for s in metric.samples}
        assert len(children) == 1, f"{metric.name}: {len(children)} children"


def test_no_created_series() -> None:
    names = {s.name for m in shapes.families(shapes.worker_registry()) for s in m.samples}
    assert not [n for n in names if n.endswith("_created")]


@pytest.mark.parametrize("refused", [0, 1])
def test_operator_has_one_series_per_session(refused: int) -> None:
    base = shapes.count(shapes.operator_registry(10, refused_sessions=refused))
    more = shapes.count(shapes.operator_registry(110, refused_sessions=refused))
    assert (more - base) / 100 == OPERATOR_SERIES_PER_SESSION
    assert base - 10 <= OPERATOR_FIXED_MAX


def test_roundtrip_histogram_has_no_session_label() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.roundtrip.observe(0.01)
    samples = [s for m in registry.collect()
               if m.name == "salon_operator_pubsub_roundtrip_seconds" for s in m.samples]
    assert samples
    assert all(set(s.labels) <= {"le"} for s in samples)


def test_acl_denial_labels_are_bounded() -> None:
    registry = CollectorRegistry()
    denials = acl_denials.AclDenials(None, OperatorMetrics(registry))  # type: ignore[arg-type]
    assert denials.labels("salon-api", "key") == ("salon-api", "key")
    assert denials.labels("salon-session.ns.a", "channel") == ("salon-session.ns.a", "channel")
    assert denials.labels("mallory-1234", "auth") == ("other", "auth")
    assert denials.labels("salon-api", "something-new") == ("salon-api", "other")
    for i in range(acl_denials.MAX_USERS + 50):
        denials.labels(f"salon-session.ns.s{i}", "auth")
    assert denials.labels("salon-session.ns.late", "auth") == ("other", "auth")
    assert denials.labels("salon-session.ns.s1", "auth") == ("salon-session.ns.s1", "auth")
