"""deploy/rbac/ grants the operator exactly the verbs it uses (every operator test also runs
the operator with this service account's token, so a missing verb fails them)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

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


def as_operator(stack: StackInfo, namespace: str, method: str, path: str,
                body: object = None) -> tuple[int, str]:
    """One API request impersonating the operator's ServiceAccount (kubectl would GET the
    object first, which the account may not: the verb itself is what is tested here)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {stack.admin_token}",
               "Impersonate-User": f"system:serviceaccount:{namespace}:{SA}",
               "Impersonate-Group": "system:serviceaccounts",
               "Content-Type": "application/merge-patch+json" if method == "PATCH"
               else "application/json"}
    request = urllib.request.Request(f"{stack.kube_server}/api/v1/namespaces/{namespace}"
                                     f"/secrets{path}", data=data, method=method,
                                     headers=headers)
    context = ssl.create_default_context(cafile=stack.ca_file)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_operator_may_write_only_its_sessions_credentials_secrets(
        stack: StackInfo, namespace: str) -> None:
    """RBAC cannot restrict create by name (nor any verb by a label): deploy/rbac's admission
    policy does, for the operator's ServiceAccount."""
    stack.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": rbac_documents(namespace)}))
    stack.kubectl("create", "secret", "generic", "salon-sessions-api", "-n", namespace,
                  "--from-literal=admin-token=not-the-operator-s")

    def refused(method: str, path: str, body: object = None) -> bool:
        status, text = as_operator(stack, namespace, method, path, body)
        assert "bm90LXRoZS1vcGVyYXRvci1z" not in text  # the foreign Secret's data, base64
        return status == 403 and "may only write" in text

    labels = {"app.kubernetes.io/component": "session-credentials",
              "app.kubernetes.io/managed-by": "salon-sessions-operator"}
    own = {"apiVersion": "v1", "kind": "Secret", "data": {},
           "metadata": {"name": "company-1-credentials", "labels": labels}}
    unlabelled = {**own, "metadata": {"name": "company-2-credentials"}}
    misnamed = {**own, "metadata": {"name": "company-3", "labels": labels}}
    eventually(lambda: refused("POST", "", unlabelled), 60, "the admission policy in force")
    assert refused("POST", "", misnamed)
    assert as_operator(stack, namespace, "POST", "", own)[0] == 201
    # another Secret cannot be taken over (labels patched in), read (a PATCH answers with
    # the data) or deleted
    assert refused("PATCH", "/salon-sessions-api", {"metadata": {"labels": labels}})
    assert refused("PATCH", "/salon-sessions-api", {})
    assert refused("DELETE", "/salon-sessions-api")
    assert as_operator(stack, namespace, "PATCH", "/company-1-credentials",
                       {"data": {"redis-url": "eA=="}})[0] == 200
    assert as_operator(stack, namespace, "DELETE", "/company-1-credentials")[0] == 200
    assert stack.kubectl("get", "secret", "salon-sessions-api", "-n", namespace,
                         check=False).returncode == 0
