"""The CRD file agrees with the Python contracts (no cluster needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from salon_sessions.core import resource
from salon_sessions.core.company import COMPANY_ID_PATTERN, canonical_company_id, resource_name
from salon_sessions.core.display_name import DISPLAY_NAME_CRD_PATTERN
from salon_sessions.core.events import LinkMethod
from salon_sessions.core.phone import PHONE_PATTERN
from tests.crd.crd_files import EXAMPLES, load_crd, schema


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        if path == "" and name == "metadata":
            continue  # ObjectMeta: kubectl explain documents it
        yield from _fields(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from _fields(node["items"], f"{path}[]")


def test_names_match_the_python_constants() -> None:
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == resource.CRD_NAME
    assert crd["spec"]["group"] == resource.GROUP
    assert [v["name"] for v in crd["spec"]["versions"]] == [resource.VERSION]
    assert names["kind"] == resource.KIND
    assert names["plural"] == resource.PLURAL
    assert names["singular"] == resource.SINGULAR
    assert tuple(names["shortNames"]) == resource.SHORT_NAMES
    assert names["categories"] == [resource.CATEGORY]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_every_field_has_a_description() -> None:
    missing = [path or "<root>" for path, node in _fields(schema(), "")
               if not node.get("description", "").strip()]
    assert missing == []
    assert len(list(_fields(schema(), ""))) > 40


@pytest.mark.parametrize(("path", "enum"), [
    ("status.phase", resource.Phase),
    ("status.conditions[].type", resource.ConditionType),
    ("spec.driver", resource.DriverName),
    ("spec.deletionPolicy", resource.DeletionPolicy),
    ("spec.link.method", LinkMethod),
])
def test_enums_match_the_python_enums(path: str, enum: type[Any]) -> None:
    node = dict(_fields(schema(), ""))[path]
    assert node["enum"] == [member.value for member in enum]


@pytest.mark.parametrize(("path", "pattern"), [
    ("spec.companyId", COMPANY_ID_PATTERN),
    ("spec.link.phoneNumber", PHONE_PATTERN),
    ("status.phone", PHONE_PATTERN),
    ("spec.displayName", DISPLAY_NAME_CRD_PATTERN),
])
def test_patterns_are_the_core_patterns(path: str, pattern: str) -> None:
    assert dict(_fields(schema(), ""))[path]["pattern"] == pattern


def test_printer_columns() -> None:
    columns = load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"].upper() for c in columns] == [
        "COMPANY", "PHASE", "LINKED", "CONNECTED", "PHONE", "AGE"]


def test_quantity_pattern_is_kubernetes_own() -> None:
    node = dict(_fields(schema(), ""))["spec.resources.limits.memory"]
    for good in ("512Mi", "1", "0.5", "100m", "1e3"):
        assert re.fullmatch(node["pattern"], good)
    for bad in ("lots", "1 Gi", "Mi"):
        assert not re.fullmatch(node["pattern"], bad)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_canonical(path: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    company = doc["spec"]["companyId"]
    assert canonical_company_id(company) == company
    assert doc["metadata"]["name"] == resource_name(company)
    assert doc["apiVersion"] == resource.API_VERSION


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"qr.yaml", "pairing-code.yaml", "simulator.yaml"}


def test_expire_after_rules_are_the_core_rules() -> None:
    """The CRD's CEL rules use the core's pattern and bounds, so the operator never gets a
    value `resource.expire_after_seconds` refuses."""
    node = dict(_fields(schema(), ""))["spec.link.expireAfter"]
    rules = " ".join(r["rule"] for r in node["x-kubernetes-validations"])
    assert f"self.matches('{resource.EXPIRE_AFTER_PATTERN}')" in rules
    assert f"duration('{resource.LINK_EXPIRE_AFTER_MIN_S}s')" in rules
    assert f"duration('{resource.LINK_EXPIRE_AFTER_MAX_S // 3600}h')" in rules
    assert node["default"] == resource.LINK_EXPIRE_AFTER_DEFAULT
    assert schema()["properties"]["spec"]["properties"]["link"]["default"]["expireAfter"] \
        == resource.LINK_EXPIRE_AFTER_DEFAULT


@pytest.mark.parametrize(("text", "seconds"), [
    (None, 1800), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("5s", 5),
    ("168h", 604800), ("1h0m1s", 3601), ("0h10m", 600),
])
def test_expire_after_seconds(text: str | None, seconds: int) -> None:
    assert resource.expire_after_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "4s", "169h", "1d", "30M", "m30", "1m1h",
                                  " 30m", "1.5h", "-5m", "1234567s"])
def test_expire_after_seconds_refuses_what_the_crd_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expireAfter must be"):
        resource.expire_after_seconds(text)
