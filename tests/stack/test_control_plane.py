"""The local control plane itself: versions, RBAC, the node, and CRDs being served."""

from __future__ import annotations

import json
import textwrap

from devstack.stack import NODE_NAME, StackInfo
from tests.helpers import eventually, get_json

WIDGET_CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.stacktest.salonsessions.io
    spec:
      group: stacktest.salonsessions.io
      names: {kind: Widget, plural: widgets, singular: widget}
      scope: Namespaced
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: integer, minimum: 1}
""")


def test_apiserver_reports_a_real_version(stack: StackInfo) -> None:
    version = json.loads(stack.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] != "v0.0.0"
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_rbac_is_enforced(stack: StackInfo, namespace: str) -> None:
    sa = f"system:serviceaccount:{namespace}:default"
    denied = stack.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, "--as", sa,
                           check=False)
    assert denied.stdout.strip() == "no"
    allowed = stack.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, check=False)
    assert allowed.stdout.strip() == "yes"


def test_node_is_ready_and_schedulable(stack: StackInfo) -> None:
    node = get_json(stack, "node", NODE_NAME)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert not node["spec"].get("taints")
    assert int(node["status"]["allocatable"]["pods"]) > 0


def test_crd_applied_with_kubectl_is_served(stack: StackInfo, namespace: str) -> None:
    stack.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/widgets.stacktest.salonsessions.io")
    widget = ("apiVersion: stacktest.salonsessions.io/v1\nkind: Widget\n"
              "metadata: {name: w1}\nspec: {size: 3}\n")
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=widget)
    got = get_json(stack, "widget", "w1", "-n", namespace)
    assert got["spec"]["size"] == 3
    bad = widget.replace("size: 3", "size: 0")
    rejected = stack.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr
    listed = eventually(lambda: stack.kubectl("get", "widgets", "-n", namespace).stdout,
                        what="widgets listed")
    assert "w1" in listed
