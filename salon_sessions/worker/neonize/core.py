"""neonize's Go core and the few protobuf modules the driver needs, without `import neonize`.

Why not `import neonize`: its package `__init__` imports the whole Python client (PIL,
httpx, linkpreview, bs4, segno, ~700 modules, ~40 MiB resident) of which the driver uses
nothing, and `neonize._binder` declares ~150 Go functions the driver never calls. What the
driver does use is small: seven exported Go functions (`Neonize`, `Stop`, `Disconnect`,
`PairPhone`, `SendMessage`, `SendChatPresence`, `Logout`), three protobuf modules, and the
table that tells which protobuf class an event code carries. Those are declared here, by
us, after the semantics of neonize 0.5.2's `_binder.py` and the Go core's C signatures:

- functions that return a Go-allocated `char*` (`Neonize`, `Logout`, `SendChatPresence`)
  get the pointer and free it with `FreeString` after copying (a `c_char_p` restype would
  leak it);
- functions that return a Go-allocated `struct BytesReturn*` (`PairPhone`, `SendMessage`)
  are copied, then freed with `FreeBytesStruct`;
- `Stop` and `Disconnect` return nothing in Go (`func Stop(id *C.char)`): their restype is
  `None`. The wheel declares `Stop` as returning a C string and frees whatever happens to
  be in the return register.

Every call returns plain `bytes` (or None), as neonize's own error checks do, so callers
read results the same way.

The protobuf modules are neonize's generated `*_pb2` files, loaded without running
`neonize/__init__.py`: `Neonize_pb2` is executed from its file under its canonical name
`neonize.proto.Neonize_pb2`, and its dependencies, which the generated code imports as
top-level packages (`from waE2E import ...`), are found the way neonize itself finds them:
its `proto` directory on `sys.path` (appended here, so it shadows nothing). If neonize was
imported in full before (a test may), its already loaded modules are reused.

Go reads its environment (`GOMEMLIMIT`, `GOGC`, `NEONIZE_BOT_TAG`) from the process's
exec-time environment, not from `os.environ` (see `goenv`); `load_core` warns when the
bot-label switch is missing from it.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from salon_sessions.worker.neonize import goenv

log = logging.getLogger(__name__)

PROTO_MODULE: Final = "neonize.proto.Neonize_pb2"
E2E_MODULE: Final = "waE2E.WAWebProtobufsE2E_pb2"
COMPANION_MODULE: Final = "waCompanionReg.WAWebProtobufsCompanionReg_pb2"

EVENT_MESSAGES: Final[dict[int, str]] = {
    0: "Device", 1: "QR", 2: "PairStatus", 3: "Connected", 4: "KeepAliveTimeout",
    5: "KeepAliveRestored", 6: "LoggedOut", 7: "StreamReplaced", 8: "TemporaryBan",
    9: "ConnectFailure", 10: "ClientOutdated", 11: "StreamError", 12: "Disconnected",
    13: "HistorySync", 16: "NewsLetterMessageMeta", 17: "Message", 18: "Receipt",
    19: "ChatPresence", 20: "Presence", 21: "JoinedGroup", 22: "GroupInfoEvent",
    23: "Picture", 24: "IdentityChange", 25: "privacySettingsEvent",
    26: "OfflineSyncPreview", 27: "OfflineSyncCompleted", 30: "BlocklistEvent",
    31: "BlocklistChange", 32: "NewsletterJoin", 33: "NewsletterLeave",
    34: "NewsletterMuteChange", 35: "NewsletterLiveUpdate", 36: "CallOffer",
    37: "CallAccept", 38: "CallPreAccept", 39: "CallTransport", 40: "CallOfferNotice",
    41: "CallRelayLatency", 42: "CallTerminate", 43: "UnknownCallEvent",
    44: "UndecryptableMessage", 45: "RotateADVSecret",
}
"""Event code of the Go core -> message name in `Neonize.proto` (package `neonize`).

The codes are the Go core's (its event loop sends `(code, protobuf)` pairs); the classes
are looked up in the loaded descriptors (`event_classes`). `tests/worker/
test_neonize_core.py` checks this table against neonize's own `INT_TO_EVENT`."""

# ---- C types of the Go core's ABI (goneonize `header/cstruct.h`, `python/pythonptr.h`)

StringCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
"""`(uuid, NUL-terminated text)`: QR codes and login statuses."""
EventCallback = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_int)
"""`(uuid, protobuf bytes, size, event code)`."""
LogCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)
"""`(LogEntry protobuf bytes, size)`."""


class BytesReturn(ctypes.Structure):
    """`struct BytesReturn { char *data; size_t size; }` (binary: may contain NULs)."""

    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class ProxySettings(ctypes.Structure):
    """`struct ProxySettings` of the Go core, passed by pointer to `Neonize` (NULL: none).

    `noWebsocket`, `onlyLogin` and `noMedia` stay false: every connection of the session,
    WhatsApp's websocket included, goes through the proxy."""

    _fields_ = [
        ("proxyAddress", ctypes.c_char_p),
        ("noWebsocket", ctypes.c_bool),
        ("onlyLogin", ctypes.c_bool),
        ("noMedia", ctypes.c_bool),
    ]


def proxy_settings(url: str) -> ProxySettings:
    """The settings that route everything through `url` (socks5/http/https)."""
    return ProxySettings(proxyAddress=url.encode(), noWebsocket=False, onlyLogin=False,
                         noMedia=False)


def _declare(lib: Any) -> None:
    """Prototypes of the functions the driver calls, and their result conversion.

    `lib` is a `ctypes.CDLL`, typed `Any`: typeshed wants an `errcheck` to return a ctypes
    value, ctypes passes on whatever it returns (here `bytes`)."""
    c_char_p, c_int = ctypes.c_char_p, ctypes.c_int

    def take_string(result: int | None, _func: Any, _args: Any) -> bytes:
        if not result:
            return b""
        try:
            return ctypes.string_at(result)
        finally:
            lib.FreeString(result)

    def take_bytes(result: Any, _func: Any, _args: Any) -> bytes:
        if not result:
            return b""
        try:
            contents = result.contents
            if not contents.ptr or not contents.size:
                return b""
            return ctypes.string_at(contents.ptr, contents.size)
        finally:
            lib.FreeBytesStruct(result)

    lib.FreeString.argtypes = [ctypes.c_void_p]
    lib.FreeString.restype = None
    lib.FreeBytesStruct.argtypes = [ctypes.POINTER(BytesReturn)]
    lib.FreeBytesStruct.restype = None
    lib.GetVersion.argtypes = []
    lib.GetVersion.restype = c_char_p  # a static string: never freed

    # Neonize(db, uuid, jid, jid_size, new_device, log_level, qr_cb, login_cb, event_cb,
    #         log_cb, subscribed, n_subscribed, device_props, props_size,
    #         pair_phone, pair_phone_size, proxy*) -> char* error ("" when none)
    lib.Neonize.argtypes = [c_char_p, c_char_p, c_char_p, c_int, c_int, c_char_p,
                            StringCallback, StringCallback, EventCallback, LogCallback,
                            c_char_p, c_int, c_char_p, c_int, c_char_p, c_int,
                            ctypes.POINTER(ProxySettings)]
    lib.Neonize.restype = ctypes.c_void_p
    lib.Neonize.errcheck = take_string
    for name in ("Stop", "Disconnect"):
        fn = getattr(lib, name)
        fn.argtypes = [c_char_p]
        fn.restype = None
    lib.Logout.argtypes = [c_char_p]
    lib.Logout.restype = ctypes.c_void_p
    lib.Logout.errcheck = take_string
    # PairPhone(uuid, PairPhoneParams, size) -> PairPhoneReturnFunction
    lib.PairPhone.argtypes = [c_char_p, c_char_p, c_int]
    lib.PairPhone.restype = ctypes.POINTER(BytesReturn)
    lib.PairPhone.errcheck = take_bytes
    # SendMessage(uuid, JID, size, waE2E.Message, size) -> SendMessageReturnFunction
    lib.SendMessage.argtypes = [c_char_p, c_char_p, c_int, c_char_p, c_int]
    lib.SendMessage.restype = ctypes.POINTER(BytesReturn)
    lib.SendMessage.errcheck = take_bytes
    # SendChatPresence(uuid, JID, size, state, media) -> char* error ("" when none);
    # state and media index Go slices (`utils.ChatPresence`, `utils.ChatPresenceMedia`):
    # anything but 0 or 1 is an index-out-of-range panic, which kills the process.
    lib.SendChatPresence.argtypes = [c_char_p, c_char_p, c_int, c_int, c_int]
    lib.SendChatPresence.restype = ctypes.c_void_p
    lib.SendChatPresence.errcheck = take_string


# ---- where the wheel keeps things

def package_dir() -> Path:
    """neonize's installed package directory (found without importing it)."""
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("neonize is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def core_library_name() -> str:
    """The Go core's file name in the wheel, as neonize names it per platform."""
    uname = os.uname()
    system = uname.sysname.lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine.lower(),
                                                        uname.machine.lower())
    ext = {"darwin": "dylib", "windows": "dll"}.get(system, "so")
    return f"neonize-{system}-{arch}.{ext}"


def load_library(path: Path) -> ctypes.CDLL:
    """dlopen the Go core (starts the Go runtime) and declare what the driver calls.

    neonize downloads a missing core at import time; here a missing core is an error (the
    image build checks that the wheel ships it)."""
    if not path.is_file():
        raise ImportError(f"neonize's Go core is missing: {path}")
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    return lib


# ---- protobuf

def _load_module_file(name: str, path: Path) -> ModuleType:
    """Execute a module file under `name` without importing its parent packages."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@dataclass(frozen=True, slots=True)
class ProtoModules:
    """neonize's generated protobuf modules the driver uses (untyped)."""

    neonize: Any
    """`Neonize_pb2`: events, `JID`, `LogEntry`, the `*ReturnFunction` results."""
    e2e: Any
    """`WAWebProtobufsE2E_pb2`: `Message` (what `SendMessage` sends)."""
    companion: Any
    """`WAWebProtobufsCompanionReg_pb2`: `DeviceProps` (how the phone lists the device)."""


def load_proto(proto_dir: Path) -> ProtoModules:
    """Load the three modules (and what they import) without `neonize/__init__.py`."""
    if PROTO_MODULE in sys.modules:  # neonize was imported in full: share its classes
        neonize_pb2 = sys.modules[PROTO_MODULE]
    else:
        if str(proto_dir) not in sys.path:
            sys.path.append(str(proto_dir))
        neonize_pb2 = _load_module_file(PROTO_MODULE, proto_dir / "Neonize_pb2.py")
    if str(proto_dir) not in sys.path:
        sys.path.append(str(proto_dir))
    return ProtoModules(neonize=neonize_pb2, e2e=importlib.import_module(E2E_MODULE),
                        companion=importlib.import_module(COMPANION_MODULE))


def event_classes(neonize_pb2: Any) -> dict[int, Any]:
    """`EVENT_MESSAGES` resolved against the loaded `Neonize.proto` descriptors; a name
    the loaded file does not define is an error (a neonize upgrade renamed it)."""
    by_name = neonize_pb2.DESCRIPTOR.message_types_by_name
    missing = sorted(name for name in EVENT_MESSAGES.values() if name not in by_name)
    if missing:
        raise ImportError(f"Neonize.proto lacks event messages: {', '.join(missing)}")
    return {code: getattr(neonize_pb2, name) for code, name in EVENT_MESSAGES.items()}


# ---- everything

@dataclass(frozen=True, slots=True)
class Core:
    """The loaded Go core and protobuf modules."""

    lib: ctypes.CDLL
    proto: ProtoModules
    events: dict[int, Any]
    version: str


def load_core() -> Core:
    """Load the protobuf modules, then the Go core (once per process: callers cache it).

    Warns when the process's exec-time environment lacks `NEONIZE_BOT_TAG` (Go's default
    then labels every message to a phone-number chat as sent by a bot)."""
    root = package_dir()
    proto = load_proto(root / "proto")
    events = event_classes(proto.neonize)
    if goenv.BOT_TAG_VARIABLE not in goenv.exec_environment():
        log.warning("%s is not in this process's environment: the Go core will mark "
                    "messages to phone-number chats as sent by a bot (start the worker "
                    "through `salon-sessions worker`, which sets it)",
                    goenv.BOT_TAG_VARIABLE)
    path = root / core_library_name()
    lib = load_library(path)
    # returns once the Go runtime and every package's init have run
    version = (lib.GetVersion() or b"").decode("utf-8", "replace")
    released = release_clean_pages(path)
    log.debug("Go core %s loaded; %.1f MiB of start-up pages released", version,
              released / 2**20)
    return Core(lib=lib, proto=proto, events=events, version=version)


# ---- memory

MADV_DONTNEED: Final = 4


def release_clean_pages(path: Path) -> int:
    """Unmap the pages of `path`'s clean read-only mappings from this process; the bytes
    that were resident.

    Go's start-up (package inits, the runtime's module-data checks) touches most of the
    core's code and read-only data once: ~15 MiB of the 18 MiB file stay mapped although
    an idle client uses ~6 MiB of them. They are file-backed and unmodified, so dropping
    them from the page tables loses nothing: a page that is used again is mapped back from
    the page cache (or re-read from the file); the others become the kernel's to reclaim.
    Only mappings that are not writable and hold no anonymous (copy-on-write) pages are
    touched - `MADV_DONTNEED` on a modified private page would discard the modification
    (the dynamic linker's relocated data is such a mapping, and is left alone)."""
    target = str(path.resolve())
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    released = 0
    for start, end, resident in _clean_readonly_mappings(target):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += resident
        else:
            log.debug("madvise of the Go core failed: errno %d", ctypes.get_errno())
    return released


def _clean_readonly_mappings(target: str) -> list[tuple[int, int, int]]:
    """`(start, end, resident bytes)` of `target`'s mappings that are not writable and have
    no anonymous pages, from /proc/self/smaps (empty where it does not exist)."""
    found: list[tuple[int, int, int]] = []
    current: list[int] | None = None  # start, end, rss, anonymous
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return found
    candidates: list[list[int]] = []
    for line in lines:
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            current = None
            span, perms = head[0], head[1]
            if len(head) == 6 and head[5] == target and "w" not in perms:
                start, end = (int(x, 16) for x in span.split("-"))
                current = [start, end, 0, 0]
                candidates.append(current)
        elif current is not None and line.startswith(("Rss:", "Anonymous:")):
            current[2 if line.startswith("Rss:") else 3] = int(line.split()[1]) * 1024
    for start, end, rss, anonymous in candidates:
        if anonymous == 0:
            found.append((start, end, rss))
    return found
