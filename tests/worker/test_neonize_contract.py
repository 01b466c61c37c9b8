"""The installed neonize against what the `neonize` driver relies on (`neonize_pins`).

No stack, no network: the wheel's metadata, its Go core (read as an ELF file and loaded),
its protobuf descriptors and the driver's own source. Each assertion says what breaks in
the driver when it fails; a neonize upgrade that changes any of it fails here first.
"""

from __future__ import annotations

import ast
import ctypes
import importlib.metadata
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import salon_sessions.worker as worker_package
from salon_sessions.core import whatsapp_reasons
from salon_sessions.core.whatsapp_reasons import from_neonize_enum
from salon_sessions.worker.neonize import core as neonize_core
from salon_sessions.worker.neonize import go as neonize_go
from salon_sessions.worker.neonize import logs as neonize_logs
from salon_sessions.worker.neonize.go import GoAttempt, load_neonize
from tests.goelf import GoBinary, param_area
from tests.worker import neonize_pins as pins

NZ = load_neonize()
SO = neonize_core.package_dir() / pins.GO_CORE_FILE


@pytest.fixture(scope="module")
def core() -> GoBinary:
    return GoBinary(SO)


# ---------------------------------------------------------------------------- versions

def test_neonize_and_whatsmeow_versions(core: GoBinary) -> None:
    stale = ("the driver's workarounds (docs/NEONIZE.md, 'Limits': the empty-protobuf "
             "panics, FetchMe ignoring Stop, the unclosed store pool, the panic on an "
             "unknown JID) were verified against neonize "
             f"{pins.NEONIZE_VERSION} / whatsmeow {pins.WHATSMEOW_VERSION}; re-verify "
             "them, then update tests/worker/neonize_pins.py")
    assert importlib.metadata.version("neonize") == pins.NEONIZE_VERSION, stale
    get_version = ctypes.CFUNCTYPE(ctypes.c_char_p)(("GetVersion", NZ.gocode))
    assert get_version().decode() == pins.NEONIZE_VERSION, (
        "the Go core is not the wheel's own build: " + stale)
    info = core.build_info
    assert info.main_path == pins.GO_CORE_MAIN_MODULE, info.main_path
    assert info.deps.get("go.mau.fi/whatsmeow") == pins.WHATSMEOW_VERSION, stale
    for key, value in pins.GO_CORE_BUILD.items():
        assert info.settings.get(key) == value, (
            f"build setting {key}: {info.settings.get(key)!r}; a rebuilt core: " + stale)


# ---------------------------------------------------------------------------- exports

def driver_go_calls() -> Iterator[tuple[str, int, str]]:
    """Every `<...>.gocode.<Symbol>(args)` call in the worker package: (symbol, number of
    arguments, where)."""
    for path in sorted(Path(worker_package.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr == "gocode"):
                assert not any(isinstance(a, ast.Starred) for a in node.args), (
                    f"{path.name}:{node.lineno}: a Go call with *args cannot be checked")
                yield node.func.attr, len(node.args), f"{path.name}:{node.lineno}"


def test_the_driver_calls_only_pinned_exports_with_their_argument_count() -> None:
    calls = list(driver_go_calls())
    assert {name for name, _, _ in calls} >= {"Neonize", "Stop", "Disconnect", "PairPhone",
                                              "SendMessage", "SendChatPresence",
                                              "Logout"}, calls
    for name, count, where in calls:
        assert name in pins.GO_EXPORTS, (
            f"{where} calls Go {name}, which is not pinned: add its signature to "
            "neonize_pins.GO_EXPORTS so an upgrade that changes it is caught")
        expected = len(pins.GO_EXPORTS[name].params)
        assert count == expected, (
            f"{where} passes {count} arguments to Go {name}, which takes {expected}: Go "
            "would read garbage for the missing ones")


@pytest.mark.parametrize("name", sorted(pins.GO_EXPORTS | pins.GO_EXPORTS_CRASH))
def test_the_go_core_exports_each_function_with_the_pinned_parameters(
        core: GoBinary, name: str) -> None:
    export = (pins.GO_EXPORTS | pins.GO_EXPORTS_CRASH)[name]
    assert name in core.exported_functions, (
        f"the Go core no longer exports {name}: the driver {export.uses} through it "
        "(an AttributeError from ctypes at that call)")
    cgo = [f for f in core.go_function_args if f.startswith("_cgoexp_")
           and f.endswith(f"_{name}")]
    assert cgo, f"{name} is exported, but not as a cgo export of a Go function"
    if not export.params:
        return  # nothing to lay out (and such a Go function may be inlined away)
    found = core.go_function_args.get(f"main.{name}")
    assert found == param_area(export.params), (
        f"Go {name}'s parameters take {found} bytes, the pinned signature "
        f"{export.params} takes {param_area(export.params)}: its signature changed, so "
        f"the driver's call ({export.uses}) passes the wrong arguments")


def ctype_kind(ctype: Any) -> str:
    if ctype in (ctypes.c_int, ctypes.c_int32):
        return "int32"
    if ctype in (ctypes.c_int64, ctypes.c_longlong):
        return "int64"
    if ctype is ctypes.c_bool:
        return "bool"
    if ctype in (ctypes.c_char_p, ctypes.c_void_p) or (
            isinstance(ctype, type) and issubclass(ctype, ctypes._Pointer)):
        return "ptr"
    if hasattr(ctype, "_restype_") and hasattr(ctype, "_argtypes_"):  # a CFUNCTYPE
        return "ptr"
    return f"unknown {ctype!r}"


@pytest.mark.parametrize("name", sorted(pins.GO_EXPORTS))
def test_the_prototype_the_driver_calls_through_matches_the_go_parameters(
        name: str) -> None:
    export = pins.GO_EXPORTS[name]
    argtypes = getattr(NZ.gocode, name).argtypes or ()
    assert tuple(ctype_kind(t) for t in argtypes) == export.params, (
        f"ctypes converts the driver's arguments to {name} as {argtypes}, Go expects "
        f"{export.params}: values would be truncated or misread")


@pytest.mark.parametrize("name", sorted(pins.GO_EXPORTS))
def test_the_prototype_decodes_only_results_go_returns(name: str) -> None:
    export = pins.GO_EXPORTS[name]
    fn = getattr(NZ.gocode, name)
    if export.result is None:
        garbage = (f"Go {name} returns nothing, but the prototype decodes a result "
                   f"({fn.restype}, errcheck {fn.errcheck}): it would read, and free, "
                   "whatever the return register holds")
        assert fn.errcheck is None, garbage
        assert fn.restype in (None, ctypes.c_int), garbage
    else:
        assert ctype_kind(fn.restype) == "ptr", (
            f"Go {name} returns a pointer; restype {fn.restype} would truncate it")


def test_the_callbacks_take_what_go_passes() -> None:
    prototypes = {"qr": neonize_core.StringCallback, "login": neonize_core.StringCallback,
                  "event": neonize_core.EventCallback, "log": neonize_core.LogCallback}
    handlers: dict[str, Callable[..., Any]] = {
        "qr": GoAttempt._on_qr, "login": GoAttempt._on_login, "event": GoAttempt._on_event,
        "log": GoAttempt._on_log}
    for kind, arity in pins.CALLBACK_ARITY.items():
        assert len(prototypes[kind]._argtypes_) == arity, (
            f"Go calls the {kind} callback with {arity} arguments; the ctypes thunk takes "
            f"{len(prototypes[kind]._argtypes_)}")
        params = list(inspect.signature(handlers[kind]).parameters)[1:]  # after self
        assert len(params) == arity, f"GoAttempt's {kind} handler takes {params}"


def test_the_proxy_settings_struct() -> None:
    struct = NZ.gocode.Neonize.argtypes[-1]._type_
    fields = tuple((name, ctype_kind(ctype)) for name, ctype in struct._fields_)
    assert fields == pins.PROXY_SETTINGS_FIELDS, (
        f"Go reads struct ProxySettings as {pins.PROXY_SETTINGS_FIELDS}, the driver "
        f"passes {fields}: the session's proxy would be misread or ignored")


# ---------------------------------------------------------------------------- strings

LOG_LINE_GONE = ("the driver would miss what it announces (an event neonize cannot "
                 "deliver), e.g. never retry or halt on a replaced stream, lose why a device "
                 "was logged out or how long a ban lasts")
SEND_ERROR_GONE = ("neonize_errors would stop recognising WhatsApp's rate limits and "
                   "reach-out restrictions, and the bridge would keep sending into them "
                   "(tests/worker/test_neonize_errors.py has the full texts)")


@pytest.mark.parametrize(("needle", "consequence"),
                         [(n, LOG_LINE_GONE) for n in neonize_logs.NEEDLES]
                         + [(t, SEND_ERROR_GONE) for t in pins.SEND_ERROR_FORMATS])
def test_the_texts_the_driver_reads_are_in_the_go_core(core: GoBinary, needle: str,
                                                       consequence: str) -> None:
    """whatsmeow's log lines (`neonize.logs`) and error texts (`neonize.errors`)."""
    assert core.contains(needle), f"whatsmeow no longer has {needle!r}: {consequence}"


def test_chat_presence_goes_through_to_go() -> None:
    """The driver's own prototype, state and media values, through the real Go core: a
    client neonize does not know answers whatsmeow's nil-client error (a wrong argument
    would panic in Go's slice index or protobuf decoding and end the process)."""
    to = neonize_go.jid_proto("79686484488@s.whatsapp.net")
    for composing in (True, False):
        assert neonize_go.go_send_chat_presence("no-such-client", to, composing) == (
            "client is nil")


def test_the_bot_label_switch_exists(core: GoBinary) -> None:
    assert core.contains(pins.BOT_TAG_SWITCH), (
        f"the Go core no longer reads {pins.BOT_TAG_SWITCH}: setting it no longer stops "
        "the 'AI/bot' label on messages the salon sends; find neonize's new switch")


# ---------------------------------------------------------------------------- events

def message(name: str) -> Any:
    return NZ.proto.DESCRIPTOR.message_types_by_name[name]


def test_event_codes_name_the_events_the_driver_means() -> None:
    codes = {value: name.removeprefix("EV_") for name, value in vars(neonize_go).items()
             if name.startswith("EV_")}
    got = {code: NZ.int_to_event[code].DESCRIPTOR.name for code in codes}
    assert got == {code: pins.EVENT_CODES[code] for code in codes}, (
        "neonize renumbered its events: the driver would subscribe to, and decode, the "
        f"wrong ones ({got})")
    assert set(neonize_go.SUBSCRIBED) <= set(codes)


def test_the_unsubscribed_events_are_still_empty() -> None:
    """The driver avoids these because an empty protobuf panics neonize's event loop and
    watches whatsmeow's log lines instead; once they carry fields, that workaround can go."""
    for code in (neonize_go.EV_KEEPALIVE_RESTORED, neonize_go.EV_STREAM_REPLACED,
                 neonize_go.EV_CLIENT_OUTDATED):
        assert code not in neonize_go.SUBSCRIBED
        fields = [f.name for f in NZ.int_to_event[code].DESCRIPTOR.fields]
        assert fields == [], (
            f"{pins.EVENT_CODES[code]} now has fields {fields}: re-check whether it can be "
            "subscribed instead of watched in the log (docs/NEONIZE.md, 'Limits')")


@pytest.mark.parametrize("code", sorted({*neonize_go.SUBSCRIBED, neonize_go.EV_DEVICE}))
def test_required_fields_of_the_subscribed_events(code: int) -> None:
    descriptor = NZ.int_to_event[code].DESCRIPTOR
    required = frozenset(f.name for f in descriptor.fields if f.is_required)
    assert required == pins.REQUIRED_FIELDS[descriptor.name], (
        f"{descriptor.name}'s required fields are now {sorted(required)}: an event whose "
        "required field Go cannot fill is dropped before it reaches the driver (see "
        "neonize_pins.REQUIRED_FIELDS); re-check the mapping in neonize_events.py")


@pytest.mark.parametrize("name", sorted(pins.FIELDS_READ))
def test_the_fields_the_driver_reads_exist(name: str) -> None:
    fields = message(name).fields_by_name
    missing = [f for f in pins.FIELDS_READ[name] if f not in fields]
    assert not missing, (
        f"{name} lost {missing}: neonize_events/neonize_go read them (an AttributeError "
        "or a silently empty value in the mapping)")


def test_the_enum_values_the_driver_decides_on() -> None:
    for (name, field), values in pins.ENUM_VALUES_READ.items():
        enum = message(name).fields_by_name[field].enum_type
        assert values <= set(enum.values_by_name), (
            f"{name}.{field} lost {sorted(values - set(enum.values_by_name))}: the "
            "reasons the driver reports (and the failures it halts on) change")
    reasons = message("ConnectFailure").fields_by_name["Reason"].enum_type.values_by_name
    unnamed = {name for name in reasons
               if from_neonize_enum(name.lower()) not in whatsapp_reasons.KNOWN}
    assert not unnamed, (
        f"neonize reports ConnectFailure reasons {sorted(unnamed)} that "
        "core/whatsapp_reasons does not name: their status, page text and retry rule "
        "would be guesses")
