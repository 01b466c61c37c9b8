"""The operator puts a hand-edited pod template back with a conditional JSON patch: a write
made between its read and its replace (a `kubectl rollout restart`) fails the replace with
422 instead of being lost. Against the real kube-apiserver, with the operator's own `Kube`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from devstack.stack import StackInfo
from salon_sessions.operator.kube import Kube, KubeError
from tests.helpers import get_json

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def statefulset(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": 0, "serviceName": name, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "worker", "image": "salon-sessions:dev"}]}}}}


async def test_a_write_in_between_fails_the_replace(stack: StackInfo, namespace: str) -> None:
    def kubectl(*args: str, input: str | None = None) -> None:
        stack.kubectl("-n", namespace, *args, input=input)

    kubectl("apply", "-f", "-", input=json.dumps(statefulset("s1")))
    read = get_json(stack, "statefulset", "s1", "-n", namespace)
    template = read["spec"]["template"]
    kubectl("rollout", "restart", "statefulset/s1")  # lands after our read

    cfg = client.Configuration()
    await config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    kube = Kube(cfg)
    try:
        with pytest.raises(KubeError) as failed:
            await kube.replace_pod_template(namespace, "s1", template,
                                            read["metadata"]["resourceVersion"])
        assert failed.value.status == 422
        now = get_json(stack, "statefulset", "s1", "-n", namespace)
        assert RESTARTED_AT in now["spec"]["template"]["metadata"]["annotations"]
        # from the current version it goes through (and drops what the template lacks)
        await kube.replace_pod_template(namespace, "s1", template,
                                        now["metadata"]["resourceVersion"])
        after = get_json(stack, "statefulset", "s1", "-n", namespace)
        assert RESTARTED_AT not in (after["spec"]["template"]["metadata"].get("annotations")
                                    or {})
    finally:
        await kube.close()
