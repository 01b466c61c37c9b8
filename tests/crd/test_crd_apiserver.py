"""The SalonSession CRD on a real kube-apiserver: examples accepted, invalid manifests
rejected naming the field, defaults, status validation, printer columns, explain."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devstack.stack import StackInfo
from salon_sessions.core import resource
from tests.crd.crd_files import CRD_FILE, EXAMPLES, schema

BASE: dict[str, Any] = {
    "apiVersion": resource.API_VERSION,
    "kind": resource.KIND,
    "metadata": {"name": "company-962302"},
    "spec": {"companyId": "company_962302"},
}


@pytest.fixture(scope="module")
def crd(stack: StackInfo) -> StackInfo:
    """The CRD applied (it stays for the rest of the session) and Established."""
    stack.kubectl("apply", "-f", str(CRD_FILE))
    stack.kubectl("wait", "--for=condition=Established", f"crd/{resource.CRD_NAME}",
                  "--timeout=60s")
    return stack


def _apply(stack: StackInfo, namespace: str, manifest: dict[str, Any] | str) -> Any:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    return stack.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with `value` set at dotted `path` (None deletes it)."""
    manifest = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return manifest


def _get(stack: StackInfo, namespace: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("get", "salonsession", name, "-n", namespace, "-o", "json")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(crd: StackInfo, namespace: str, path: Any) -> None:
    out = crd.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(path.read_text())
    got = _get(crd, namespace, doc["metadata"]["name"])
    assert got["spec"]["companyId"] == doc["spec"]["companyId"]


def test_defaults_are_filled_in(crd: StackInfo, namespace: str) -> None:
    assert _apply(crd, namespace, BASE).returncode == 0
    spec = _get(crd, namespace, "company-962302")["spec"]
    assert spec == {"companyId": "company_962302", "link": {"method": "qr", "expireAfter": "30m"},
                    "driver": "neonize", "suspend": False, "deletionPolicy": "Delete"}
    assert _apply(crd, namespace, _with("spec.proxy", {"secretRef": {"name": "p"}})
                  ).returncode == 0
    assert _get(crd, namespace, "company-962302")["spec"]["proxy"] == {
        "secretRef": {"name": "p", "key": "url"}}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no spec", _with("spec", None), "spec: Required value"),
    ("no companyId", _with("spec.companyId", None), "spec.companyId: Required value"),
    ("legacy companyId", _with("spec.companyId", "962302"), "spec.companyId: Invalid value"),
    ("leading zero", _with("spec.companyId", "company_0962302"),
     "spec.companyId: Invalid value"),
    ("19 digits", _with("spec.companyId", "company_" + "1" * 19), "spec.companyId"),
    ("name not derived", _with("spec.companyId", "company_5"),
     "metadata.name must be derived from spec.companyId"),
    ("link method", _with("spec.link", {"method": "sms"}),
     'spec.link.method: Unsupported value: "sms"'),
    ("pairing code without phone", _with("spec.link", {"method": "pairingCode"}),
     "spec.link.phoneNumber: Required value: phoneNumber is required when method is "
     "pairingCode"),
    ("phone with plus", _with("spec.link", {"method": "pairingCode",
                                            "phoneNumber": "+79686484488"}),
     "spec.link.phoneNumber: Invalid value"),
    ("phone too short", _with("spec.link", {"method": "qr", "phoneNumber": "1234567"}),
     "spec.link.phoneNumber: Invalid value"),
    ("expireAfter not a duration", _with("spec.link", {"method": "qr", "expireAfter": "1d"}),
     "spec.link.expireAfter: Invalid value: \"1d\": expireAfter must be a duration in "
     "hours, minutes and seconds, in that order, such as 30m, 2h, 1h30m or 90s"),
    ("expireAfter empty", _with("spec.link", {"method": "qr", "expireAfter": ""}),
     "spec.link.expireAfter: Invalid value"),
    ("expireAfter too short", _with("spec.link", {"method": "qr", "expireAfter": "4s"}),
     "spec.link.expireAfter: Invalid value: \"4s\": expireAfter must be from 5s to 168h "
     "(7 days)"),
    ("expireAfter too long", _with("spec.link", {"method": "qr", "expireAfter": "169h"}),
     "expireAfter must be from 5s to 168h (7 days)"),
    ("expireAfter a number", _with("spec.link", {"method": "qr", "expireAfter": 1800}),
     "spec.link.expireAfter: Invalid value"),
    ("driver", _with("spec.driver", "baileys"), 'spec.driver: Unsupported value: "baileys"'),
    ("deletion policy", _with("spec.deletionPolicy", "Orphan"),
     'spec.deletionPolicy: Unsupported value: "Orphan"'),
    ("suspend not bool", _with("spec.suspend", "yes"), "spec.suspend: Invalid value"),
    ("proxy url inline", _with("spec.proxy", {"url": "socks5://u:pw@proxy:1080"}),
     'unknown field "spec.proxy.url"'),
    ("proxy without secretRef", _with("spec.proxy", {}), "spec.proxy.secretRef: Required value"),
    ("proxy secret name", _with("spec.proxy", {"secretRef": {"name": "Not_A_Name"}}),
     "spec.proxy.secretRef.name: Invalid value"),
    ("image with space", _with("spec.image", "salon sessions:1"), "spec.image: Invalid value"),
    ("cpu not a quantity", _with("spec.resources", {"requests": {"cpu": "lots"}}),
     "spec.resources.requests.cpu: Invalid value"),
    ("negative memory", _with("spec.resources", {"limits": {"memory": "-1Gi"}}),
     "spec.resources.limits.memory: Invalid value"),
    ("requests above limits", _with("spec.resources", {"requests": {"memory": "1Gi"},
                                                       "limits": {"memory": "512Mi"}}),
     "spec.resources: Invalid value: resources.requests must not exceed resources.limits"),
    ("empty display name", _with("spec.displayName", ""), "spec.displayName: Invalid value"),
    ("display name with NUL", _with("spec.displayName", "Salon\x00Aurora"),
     "spec.displayName"),
    ("display name with RLO", _with("spec.displayName", "Salon \u202eexe.gnp"),
     "spec.displayName: Invalid value"),
    ("display name with a newline", _with("spec.displayName", "Salon\nAurora"),
     "spec.displayName: Invalid value"),
    ("display name with an isolate", _with("spec.displayName", "Salon \u2067x\u2069"),
     "spec.displayName: Invalid value"),
    ("unknown spec field", _with("spec.phone", "79686484488"), 'unknown field "spec.phone"'),
]


@pytest.mark.parametrize(("manifest", "message"), [(m, e) for _, m, e in INVALID],
                         ids=[case for case, _, _ in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(
        crd: StackInfo, namespace: str, manifest: dict[str, Any], message: str) -> None:
    out = _apply(crd, namespace, manifest)
    assert out.returncode != 0, f"accepted: {manifest}"
    assert message in out.stderr, out.stderr
    listed = crd.kubectl("get", "salonsessions", "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == ""


@pytest.mark.parametrize(("value", "seconds"), [("90s", 90), ("2h", 7200), ("1h30m", 5400),
                                               ("5s", 5), ("168h", 604800)])
def test_expire_after_durations_are_accepted(crd: StackInfo, namespace: str, value: str,
                                             seconds: int) -> None:
    out = _apply(crd, namespace, _with("spec.link", {"method": "qr", "expireAfter": value}))
    assert out.returncode == 0, out.stderr
    link = _get(crd, namespace, "company-962302")["spec"]["link"]
    assert link == {"method": "qr", "expireAfter": value}
    assert resource.expire_after_seconds(link["expireAfter"]) == seconds


@pytest.mark.parametrize("name", ["Salon Aurora", "Салон «Аврора»", "صالون", "👩\u200d🎤 Studio",
                                  "x" * 200])
def test_display_names_people_write_are_accepted(crd: StackInfo, namespace: str,
                                                 name: str) -> None:
    out = _apply(crd, namespace, _with("spec.displayName", name))
    assert out.returncode == 0, out.stderr
    assert _get(crd, namespace, "company-962302")["spec"]["displayName"] == name


def test_company_id_is_immutable(crd: StackInfo, namespace: str) -> None:
    assert _apply(crd, namespace, BASE).returncode == 0
    out = crd.kubectl("patch", "salonsession", "company-962302", "-n", namespace,
                      "--type=merge", "-p", '{"spec":{"companyId":"company_5"}}', check=False)
    assert out.returncode != 0
    assert "spec.companyId: Invalid value" in out.stderr
    assert "companyId is immutable" in out.stderr


def _patch_status(stack: StackInfo, namespace: str, status: dict[str, Any]) -> Any:
    return stack.kubectl("patch", "salonsession", "company-962302", "-n", namespace,
                         "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": status}), check=False)


CONNECTED_STATUS: dict[str, Any] = {
    "phase": "Connected", "linked": True, "connected": True, "phone": "79686484488",
    "lastConnectedAt": "2025-11-25T10:00:00Z", "lastEventAt": "2025-11-25T10:00:01Z",
    "lastEventSeq": 1764064801000000, "podName": "company-962302-0", "observedGeneration": 1,
    "conditions": [
        {"type": t, "status": "True", "reason": "Connected", "message": "socket open",
         "lastTransitionTime": "2025-11-25T10:00:00Z", "observedGeneration": 1}
        for t in ("Linked", "Connected", "Ready", "WorkerHealthy")
    ],
}


def test_status_subresource_and_printer_columns(crd: StackInfo, namespace: str) -> None:
    assert _apply(crd, namespace, BASE).returncode == 0
    # status is ignored on the main resource and written through the subresource
    assert _apply(crd, namespace, {**BASE, "status": {"phase": "Connected"}}).returncode == 0
    assert "status" not in _get(crd, namespace, "company-962302")
    out = _patch_status(crd, namespace, CONNECTED_STATUS)
    assert out.returncode == 0, out.stderr
    assert _get(crd, namespace, "company-962302")["status"] == CONNECTED_STATUS

    for name in ("salonsessions", "salonsession", "salon", "ss",
                 f"{resource.PLURAL}.{resource.GROUP}"):
        table = crd.kubectl("get", name, "-n", namespace).stdout.splitlines()
        assert table[0].split() == ["NAME", "COMPANY", "PHASE", "LINKED", "CONNECTED",
                                    "PHONE", "AGE"], name
        assert table[1].split()[:6] == ["company-962302", "company_962302", "Connected",
                                        "true", "true", "79686484488"]
    category = crd.kubectl("get", resource.CATEGORY, "-n", namespace, "-o", "name")
    assert category.stdout.strip() == "salonsession.wa.salonsessions.io/company-962302"


@pytest.mark.parametrize(("status", "message"), [
    ({"phase": "Linked"}, 'status.phase: Unsupported value: "Linked"'),
    ({"phone": "123456789012345@lid"}, "status.phone: Invalid value"),
    ({"lastConnectedAt": "yesterday"}, "status.lastConnectedAt: Invalid value"),
    ({"conditions": [{"type": "Ready", "status": "Maybe", "reason": "X", "message": "",
                      "lastTransitionTime": "2025-11-25T10:00:00Z"}]},
     'status.conditions[0].status: Unsupported value: "Maybe"'),
    ({"conditions": [{"type": "Ready", "status": "True", "message": "",
                      "lastTransitionTime": "2025-11-25T10:00:00Z"}]},
     "status.conditions[0].reason: Required value"),
])
def test_invalid_status_is_rejected(crd: StackInfo, namespace: str, status: dict[str, Any],
                                    message: str) -> None:
    assert _apply(crd, namespace, BASE).returncode == 0
    out = _patch_status(crd, namespace, status)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def _paths(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in node.get("properties", {}).items():
        if path == "" and name == "metadata":
            continue  # ObjectMeta, documented by Kubernetes itself
        sub = f"{path}.{name}" if path else name
        yield sub, child
        yield from _paths(child, sub)
        if "items" in child:
            yield from _paths(child["items"], sub)


def test_explain_describes_every_field(crd: StackInfo) -> None:
    explained = crd.kubectl("explain", "salonsessions.spec.link.phoneNumber").stdout
    assert "digits-only E.164" in explained
    published = json.loads(crd.kubectl(
        "get", "--raw", f"/openapi/v3/apis/{resource.GROUP}/{resource.VERSION}").stdout)
    kind = next(v for k, v in published["components"]["schemas"].items()
                if k.endswith(f"{resource.VERSION}.{resource.KIND}"))
    fields = dict(_paths(kind))
    assert set(fields) == {p for p, _ in _paths(schema())}
    assert [p for p, node in fields.items() if not node.get("description")] == []
    recursive = crd.kubectl("explain", "salonsessions", "--recursive").stdout
    for path in fields:
        assert path.rsplit(".", 1)[-1] in recursive
