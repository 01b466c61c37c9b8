"""deploy/rbac/ grants the operator exactly the verbs it uses (every operator test also runs
the operator with this service account's token, so a missing verb fails them)."""

from __future__ import annotations

import json

import pytest

from devstack.stack import StackInfo
from tests.operator.conftest import REPO, SA, rbac_documents

pytestmark = pytest.mark.slow

ALLOWED = [
    ("get", "salonsessions.wa.salonsessions.io"),
    ("list", "salonsessions.wa.salonsessions.io"),
    ("watch", "salonsessions.wa.salonsessions.io"),
    ("patch", "salonsessions.wa.salonsessions.io"),
    ("patch", "salonsessions.wa.salonsessions.io:status"),
    ("update", "salonsessions.wa.salonsessions.io:finalizers"),
    ("create", "statefulsets.apps"),
    ("patch", "statefulsets.apps"),
    ("delete", "statefulsets.apps"),
    ("watch", "statefulsets.apps"),
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "secrets"), ("patch", "secrets"), ("delete", "secrets"),
    ("create", "events"),
    ("create", "leases.coordination.k8s.io"),
    ("get", "leases.coordination.k8s.io/salon-sessions-operator"),
    ("update", "leases.coordination.k8s.io/salon-sessions-operator"),
    ("create", "configmaps"),
    ("get", "configmaps/salon-sessions-operator-pending-cleanups"),
    ("update", "configmaps/salon-sessions-operator-pending-cleanups"),
]
DENIED = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("update", "secrets"),
    ("deletecollection", "secrets"),
    ("create", "salonsessions.wa.salonsessions.io"),
    ("update", "salonsessions.wa.salonsessions.io"),
    ("delete", "salonsessions.wa.salonsessions.io"),
    ("update", "salonsessions.wa.salonsessions.io:status"),
    ("update", "statefulsets.apps"),
    ("create", "pods"), ("delete", "pods"), ("patch", "pods"), ("get", "pods:log"),
    ("create", "pods:exec"),
    ("delete", "events"),
    ("get", "configmaps/other"), ("update", "configmaps/other"), ("list", "configmaps"),
    ("delete", "configmaps/salon-sessions-operator-pending-cleanups"),
    ("update", "leases.coordination.k8s.io/other-lease"),
    ("delete", "leases.coordination.k8s.io/salon-sessions-operator"),
    ("create", "deployments.apps"), ("create", "roles.rbac.authorization.k8s.io"),
    ("list", "namespaces"), ("list", "customresourcedefinitions.apiextensions.k8s.io"),
]


def can_i(stack: StackInfo, namespace: str, verb: str, resource: str,
          other_namespace: str | None = None) -> bool:
    """`resource` is `plural.group[/name][:subresource]`."""
    resource, _, sub = resource.partition(":")
    extra = [f"--subresource={sub}"] if sub else []
    out = stack.kubectl("auth", "can-i", verb, resource, *extra, "-n",
                        other_namespace or namespace,
                        f"--as=system:serviceaccount:{namespace}:{SA}", check=False)
    return out.stdout.strip() == "yes"


def test_operator_service_account_has_only_the_verbs_it_uses(stack: StackInfo,
                                                            namespace: str) -> None:
    stack.kubectl("apply", "-f", str(REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"))
    stack.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": rbac_documents(namespace)}))
    denied = [(v, r) for v, r in ALLOWED if not can_i(stack, namespace, v, r)]
    assert denied == []
    allowed = [(v, r) for v, r in DENIED if can_i(stack, namespace, v, r)]
    assert allowed == []
    # the namespaced binding grants nothing outside its namespace
    assert not can_i(stack, namespace, "patch", "salonsessions.wa.salonsessions.io:status",
                     other_namespace="default")
