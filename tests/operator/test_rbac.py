"""deploy/rbac/ grants the operator exactly the verbs it uses (every operator test also runs
the operator with this service account's token, so a missing verb fails them)."""

from __future__ import annotations

import json

import pytest

from devstack.stack import StackInfo
from tests.helpers import eventually
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
    ("create", "secrets"), ("patch", "secrets"), ("delete", "secrets"),
    ("create", "events"),
    ("create", "leases.coordination.k8s.io"),
    ("get", "leases.coordination.k8s.io/salon-sessions-operator"),
    ("update", "leases.coordination.k8s.io/salon-sessions-operator"),
]
DENIED = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("update", "secrets"),
    ("deletecollection", "secrets"),
    ("create", "salonsessions.wa.salonsessions.io"),
    ("update", "salonsessions.wa.salonsessions.io"),
    ("delete", "salonsessions.wa.salonsessions.io"),
    ("update", "salonsessions.wa.salonsessions.io:status"),
    ("update", "statefulsets.apps"),
    ("create", "pods"), ("delete", "pods"), ("list", "pods"), ("get", "pods:log"),
    ("create", "pods:exec"),
    ("delete", "events"),
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


def test_the_operator_may_write_only_its_sessions_credentials_secrets(
        stack: StackInfo, namespace: str) -> None:
    """RBAC cannot restrict create by name (nor any verb by a label): deploy/rbac's admission
    policy does, for the operator's ServiceAccount."""
    stack.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": rbac_documents(namespace)}))
    as_operator = (f"--as=system:serviceaccount:{namespace}:{SA}", "-n", namespace)
    stack.kubectl("create", "secret", "generic", "salon-sessions-api", "-n", namespace,
                  "--from-literal=admin-token=not-the-operator-s")

    def refused(*args: str, input: str | None = None) -> bool:
        out = stack.kubectl(*args, *as_operator, check=False, input=input)
        return out.returncode != 0 and "may only" in out.stderr

    eventually(lambda: refused("create", "secret", "generic", "other", "--from-literal=a=b"),
               60, "the admission policy in force")
    labels = {"app.kubernetes.io/component": "session-credentials",
              "app.kubernetes.io/managed-by": "salon-sessions-operator"}
    own = {"apiVersion": "v1", "kind": "Secret", "data": {},
           "metadata": {"name": "company-1-credentials", "labels": labels}}
    unlabelled = {**own, "metadata": {"name": "company-2-credentials"}}
    misnamed = {**own, "metadata": {"name": "company-3", "labels": labels}}
    assert refused("create", "-f", "-", input=json.dumps(unlabelled))
    assert refused("create", "-f", "-", input=json.dumps(misnamed))
    stack.kubectl("create", "-f", "-", *as_operator, input=json.dumps(own))
    # another Secret cannot be taken over (labels patched in), read (a PATCH answers with the
    # data) or deleted
    assert refused("patch", "secret", "salon-sessions-api", "--type=merge", "-p",
                   json.dumps({"metadata": {"labels": labels}}))
    assert refused("patch", "secret", "salon-sessions-api", "--type=merge", "-p", "{}")
    assert refused("delete", "secret", "salon-sessions-api", "--wait=false")
    stack.kubectl("patch", "secret", "company-1-credentials", "--type=merge", "-p",
                  '{"data": {"redis-url": "eA=="}}', *as_operator)
    stack.kubectl("delete", "secret", "company-1-credentials", "--wait=false", *as_operator)
    assert stack.kubectl("get", "secret", "salon-sessions-api", "-n", namespace,
                         check=False).returncode == 0
