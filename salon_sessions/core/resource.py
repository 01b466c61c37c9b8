"""The SalonSession custom resource: API coordinates and the enums its schema allows.

`crds/salonsessions.wa.salonsessions.io.yaml` is the schema; tests keep these enums and
that file in step.
"""

from __future__ import annotations

import enum
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
