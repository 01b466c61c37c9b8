"""Paths and loaders shared by the CRD tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"
EXAMPLES = sorted((REPO / "crds" / "examples").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


def schema() -> dict[str, Any]:
    version: dict[str, Any] = load_crd()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result
