"""Stand-ins for the Prometheus Operator's CRDs (monitoring.coreos.com/v1): enough of their
schemas for the fields the chart uses, so that `kubectl apply --dry-run=server` (strict
field validation) checks the chart's ServiceMonitor, PodMonitor and PrometheusRule against
a real API server. The field names follow the Prometheus Operator's own CRDs, which are
larger (and not installable here: no network)."""

from __future__ import annotations

import json
from typing import Any

from devstack.stack import StackInfo

DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                       r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRINGS = {"type": "array", "items": {"type": "string"}}
LABEL_SELECTOR = {"type": "object", "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "matchExpressions": {"type": "array", "items": {
        "type": "object", "required": ["key", "operator"],
        "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                       "values": STRINGS}}}}}
NAMESPACE_SELECTOR = {"type": "object", "properties": {"any": {"type": "boolean"},
                                                       "matchNames": STRINGS}}
RELABELINGS = {"type": "array", "items": {"type": "object", "properties": {
    "action": {"type": "string"}, "modulus": {"type": "integer"}, "regex": {"type": "string"},
    "replacement": {"type": "string"}, "separator": {"type": "string"},
    "sourceLabels": {"type": "array",
                     "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "targetLabel": {"type": "string"}}}}
ENDPOINT = {"type": "object", "properties": {
    "port": {"type": "string"}, "targetPort": {"x-kubernetes-int-or-string": True},
    "path": {"type": "string"}, "scheme": {"type": "string", "enum": ["http", "https"]},
    "interval": DURATION, "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"},
    "relabelings": RELABELINGS, "metricRelabelings": RELABELINGS}}
RULE = {"type": "object", "required": ["expr"], "properties": {
    "alert": {"type": "string"}, "record": {"type": "string"},
    "expr": {"x-kubernetes-int-or-string": True}, "for": DURATION,
    "keep_firing_for": DURATION,
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}


def _crd(kind: str, plural: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower()},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "required": ["spec"],
                                    "properties": {"spec": spec}}}}],
        },
    }


CRDS = [
    _crd("ServiceMonitor", "servicemonitors", {
        "type": "object", "required": ["selector"], "properties": {
            "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
            "jobLabel": {"type": "string"}, "targetLabels": STRINGS,
            "endpoints": {"type": "array", "items": ENDPOINT}}}),
    _crd("PodMonitor", "podmonitors", {
        "type": "object", "required": ["selector"], "properties": {
            "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
            "jobLabel": {"type": "string"}, "podTargetLabels": STRINGS,
            "podMetricsEndpoints": {"type": "array", "items": ENDPOINT}}}),
    _crd("PrometheusRule", "prometheusrules", {
        "type": "object", "properties": {"groups": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "minLength": 1}, "interval": DURATION,
                "limit": {"type": "integer"},
                "rules": {"type": "array", "items": RULE}}}}}}),
]


def install(stack: StackInfo) -> None:
    """Apply the stand-in CRDs (idempotent) and wait until they are served."""
    stack.kubectl("apply", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List", "items": CRDS}))
    for crd in CRDS:
        stack.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      f"crd/{crd['metadata']['name']}")
