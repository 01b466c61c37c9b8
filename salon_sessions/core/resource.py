"""The SalonSession custom resource: API coordinates and the enums its schema allows.

`crds/salonsessions.wa.salonsessions.io.yaml` is the schema; tests keep these enums and
that file in step.
"""

from __future__ import annotations

import enum
import re
from typing import Final

GROUP: Final = "wa.salonsessions.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "SalonSession"
PLURAL: Final = "salonsessions"
SINGULAR: Final = "salonsession"
SHORT_NAMES: Final = ("salon", "ss")
CATEGORY: Final = "salonsessions"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    AWAITING_LINK = "AwaitingLink"
    PAIRING_CODE_ISSUED = "PairingCodeIssued"
    PASSKEY_REQUIRED = "PasskeyRequired"
    LINK_EXPIRED = "LinkExpired"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    LOGGED_OUT = "LoggedOut"
    SUSPENDED = "Suspended"
    FAILED = "Failed"


class ConditionType(enum.StrEnum):
    LINKED = "Linked"
    CONNECTED = "Connected"
    READY = "Ready"
    WORKER_HEALTHY = "WorkerHealthy"


class DriverName(enum.StrEnum):
    NEONIZE = "neonize"
    SIMULATOR = "simulator"


class DeletionPolicy(enum.StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


# ---- spec.link.expireAfter: how long an onboarding may wait for the phone ----------------
LINK_EXPIRE_AFTER_DEFAULT: Final = "30m"
LINK_EXPIRE_AFTER_MIN_S: Final = 5
LINK_EXPIRE_AFTER_MAX_S: Final = 168 * 3600
EXPIRE_AFTER_PATTERN: Final = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"
"""Hours, minutes and seconds in that order, each optional (`30m`, `2h`, `1h30m`, `90s`):
the subset of Go's duration syntax the CRD accepts (its CEL `duration()` reads it too)."""
_EXPIRE_AFTER = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,6})s)?", re.ASCII)


def expire_after_seconds(value: str | None) -> int:
    """`spec.link.expireAfter` in seconds (absent: the default, 30 minutes). Raises
    `ValueError` for what the CRD refuses (the operator gets only what it accepted)."""
    text = LINK_EXPIRE_AFTER_DEFAULT if value is None else value
    match = _EXPIRE_AFTER.fullmatch(text)
    if not text or match is None:
        raise ValueError("expireAfter must be a duration such as 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not LINK_EXPIRE_AFTER_MIN_S <= total <= LINK_EXPIRE_AFTER_MAX_S:
        raise ValueError(f"expireAfter must be from {LINK_EXPIRE_AFTER_MIN_S}s to "
                         f"{LINK_EXPIRE_AFTER_MAX_S // 3600}h")
    return total
