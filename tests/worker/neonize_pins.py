"""What the `neonize` driver was written and verified against, in one place.

`tests/worker/test_neonize_contract.py` checks the installed neonize (its wheel, its Go
core, its protobuf modules) against these values. After a neonize upgrade, a failing
contract test names what changed; the diff of this file is then the record of what was
re-verified. Change a value here only after checking the driver (and docs/NEONIZE.md,
"Limits") against the new version: each value below is something the driver relies on.

Go signatures are from neonize's `goneonize/main.go` and `python/pythonptr.h`; the
parameter areas they imply are checked against the shipped binary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NEONIZE_VERSION: Final = "0.5.2"
"""The wheel (`neonize.__version__` metadata) and the Go core's `GetVersion()`."""
WHATSMEOW_VERSION: Final = "v0.0.0-20260921121126-35ae40906e74"
"""`go.mau.fi/whatsmeow` in the Go core's build info."""
GO_CORE_FILE: Final = "neonize-linux-amd64.so"
GO_CORE_MAIN_MODULE: Final = "github.com/krypton-byte/neonize"
GO_CORE_BUILD: Final = {"-buildmode": "c-shared", "CGO_ENABLED": "1",
                        "vcs.revision": "840dd69fe22fe7d5e2156eeeb02574a861db22c2"}


@dataclass(frozen=True, slots=True)
class GoExport:
    """One exported Go function: its parameter kinds and whether it returns a value."""

    params: tuple[str, ...]
    """`ptr` (any C pointer, callback or string), `int32` (C.int), `int64`, `bool`."""
    result: str | None
    """`ptr` (`*C.char` / `*C.struct_BytesReturn`), or None: Go returns nothing."""
    uses: str
    """What the driver does with it (named in a failing assertion)."""


P, INT = "ptr", "int32"
GO_EXPORTS: Final = {
    "Neonize": GoExport(
        (P, P, P, INT, INT, P, P, P, P, P, P, INT, P, INT, P, INT, P), P,
        "runs one client: (store DSN, uuid, JID, len, newDevice, log level, QR callback, "
        "login-status callback, event callback, log callback, subscribed events, len, "
        "device props, len, pair-phone params, len, proxy settings) -> error text"),
    "Stop": GoExport((P,), None, "stops a running client and frees its map entries"),
    "Disconnect": GoExport((P,), None, "closes a login socket (a QR loop is never Stopped)"),
    "PairPhone": GoExport((P, P, INT), P,
                          "asks for a pairing code: (uuid, PairPhoneParams, len) -> bytes"),
    "SendMessage": GoExport((P, P, INT, P, INT), P,
                            "sends a text: (uuid, JID, len, Message, len) -> bytes"),
    "SendChatPresence": GoExport((P, P, INT, INT, INT), P,
                                 "shows typing before a send: (uuid, JID, len, state 0/1, "
                                 "media 0/1) -> error text"),
    "Logout": GoExport((P,), P, "unlinks the device: (uuid) -> error text"),
    "GetVersion": GoExport((), P, "the Go core's version, checked when it is loaded"),
    "FreeString": GoExport((P,), None, "frees a returned C string (ctypes errcheck)"),
    "FreeBytesStruct": GoExport((P,), None, "frees returned bytes (ctypes errcheck)"),
}
"""Every Go export the driver (or the loader it calls through) uses."""

CRASHING_EXPORT: Final = "GetLIDFromPN"
"""`clients[uuid].Store` with no such client: a nil dereference, an unrecoverable Go panic
that kills the process (the crash containment test triggers it on purpose)."""
GO_EXPORTS_CRASH: Final = {CRASHING_EXPORT: GoExport((P, P, INT), P, "(test only)")}

CALLBACK_ARITY: Final = {"qr": 2, "login": 2, "event": 4, "log": 2}
"""Arguments Go passes to the driver's callbacks (`pythonptr.h`): qr/login `(uuid, text)`,
event `(uuid, data, size, event code)`, log `(data, size)`."""

PROXY_SETTINGS_FIELDS: Final = (("proxyAddress", "ptr"), ("noWebsocket", "bool"),
                                 ("onlyLogin", "bool"), ("noMedia", "bool"))
"""`struct ProxySettings` (`header/cstruct.h`), passed by pointer to `Neonize`."""

EVENT_CODES: Final = {0: "Device", 1: "QR", 2: "PairStatus", 3: "Connected",
                      4: "KeepAliveTimeout", 5: "KeepAliveRestored", 6: "LoggedOut",
                      7: "StreamReplaced", 8: "TemporaryBan", 9: "ConnectFailure",
                      10: "ClientOutdated", 11: "StreamError", 12: "Disconnected",
                      17: "Message", 26: "OfflineSyncPreview", 27: "OfflineSyncCompleted"}
"""neonize's event numbers (`neonize.events`) for the `EV_*` constants of `neonize.go`."""

REQUIRED_FIELDS: Final = {
    "Device": frozenset({"Platform", "BussinessName", "PushName", "Initialized"}),
    "PairStatus": frozenset({"ID", "BusinessName", "Platform", "Status"}),
    "Connected": frozenset({"status"}),
    "KeepAliveTimeout": frozenset({"ErrorCount", "LastSuccess"}),
    "LoggedOut": frozenset({"OnConnect", "Reason"}),
    "TemporaryBan": frozenset({"Code", "Expire"}),
    "ConnectFailure": frozenset({"Reason", "Message", "Raw"}),
    "StreamError": frozenset({"Code", "Raw"}),
    "Disconnected": frozenset({"status"}),
    "Message": frozenset({"Info", "IsEphemeral", "IsViewOnce", "IsViewOnceV2",
                          "IsViewOnceV2Extension", "IsDocumentWithCaption",
                          "IsLottieSticker", "IsEdit", "UnavailableRequestID",
                          "RetryCount"}),
    "OfflineSyncPreview": frozenset({"Total", "AppDataChanges", "Message", "Notifications",
                                     "Receipts"}),
    "OfflineSyncCompleted": frozenset({"Count"}),
}
"""The proto2 `required` fields of each event the driver subscribes to (and `Device`, which
always comes). Go's `proto.Marshal` refuses a message with a required field unset, and
neonize's event loop then drops the event (or ends the client): an enum value neonize
cannot map (a new ban or failure code) loses the whole event. A field becoming required
widens that; one becoming optional means the driver may read a default instead of a
value."""

FIELDS_READ: Final = {
    "Device": ("JID",),
    "PairStatus": ("ID", "Status", "Error"),
    "KeepAliveTimeout": ("ErrorCount",),
    "LoggedOut": ("OnConnect", "Reason"),
    "TemporaryBan": ("Code", "Expire"),
    "ConnectFailure": ("Reason", "Message"),
    "StreamError": ("Code",),
    "Message": ("Info", "Message", "IsEdit"),
    "MessageInfo": ("MessageSource", "ID", "Pushname", "Timestamp", "Edit"),
    "MessageSource": ("Chat", "Sender", "SenderAlt", "IsFromMe", "IsGroup"),
    "JID": ("User", "Server", "Device", "RawAgent", "IsEmpty", "Integrator"),
    "LogEntry": ("Message", "Level", "Name"),
    "PairPhoneParams": ("phone", "showPushNotification", "clientType", "clientDisplayName"),
    "PairPhoneReturnFunction": ("Code", "Error"),
    "SendMessageReturnFunction": ("SendResponse", "Error"),
    "OfflineSyncPreview": ("Message",),
}
"""`neonize.proto.Neonize_pb2` fields the driver reads or writes, by message."""

ENUM_VALUES_READ: Final = {
    ("PairStatus", "Status"): frozenset({"SUCCESS", "ERROR"}),
    ("ConnectFailure", "Reason"): frozenset({"CLIENT_OUTDATED", "BAD_USER_AGENT",
                                             "LOGGED_OUT", "SERVICE_UNAVAILABLE"}),
    ("LoggedOut", "Reason"): frozenset({"LOGGED_OUT"}),
    ("TemporaryBan", "Code"): frozenset({"SEND_TO_TOO_MANY_PEOPLE", "BLOCKED_BY_USERS"}),
}
"""Enum value names the driver's decisions depend on (lower-cased into reasons; the
non-retryable connect failures halt the driver)."""

BOT_TAG_SWITCH: Final = "NEONIZE_BOT_TAG"
"""The environment variable neonize's Go core reads to stop adding its bot node (the
"AI/bot" label) to every message sent to a phone-number chat; `off` turns it off."""

SEND_ERROR_FORMATS: Final = ("server returned error", "info query returned status %d: %s",
                             "rate-overlimit", "client is nil")
"""whatsmeow's texts that `neonize.errors` reads WhatsApp's send refusals from
(`ErrServerReturnedError` + the ack's code, `IQError.Error()`, `ErrIQRateOverLimit`), and the
error `SendChatPresence` returns for a client neonize does not know (the contract test's
call)."""
