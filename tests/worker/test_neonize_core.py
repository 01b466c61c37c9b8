"""Our loading of neonize's Go core and protobuf modules, checked against neonize's own.

neonize itself is imported only in child processes: its package `__init__` reconfigures
logging and loads ~700 modules, which must not leak into this test process."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from salon_sessions.worker.neonize import core as neonize_core
from salon_sessions.worker.neonize.go import load_neonize


def run_python(script: str) -> Any:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


NEONIZE_SIDE = """
import ctypes, json
import neonize._binder as binder
from neonize.events import INT_TO_EVENT
print(json.dumps({
    "events": {str(code): cls.DESCRIPTOR.full_name for code, cls in INT_TO_EVENT.items()},
    "proxy": [[name, ctypes.sizeof(kind)] for name, kind in binder._CProxySettings._fields_],
    "proxy_size": ctypes.sizeof(binder._CProxySettings),
    "bytes": [[name, ctypes.sizeof(kind)] for name, kind in binder.Bytes._fields_],
}))
"""


def test_event_table_and_c_structs_are_neonizes() -> None:
    theirs = run_python(NEONIZE_SIDE)
    ours = {str(code): f"neonize.{name}" for code, name in neonize_core.EVENT_MESSAGES.items()}
    assert ours == theirs["events"]
    loaded = load_neonize().int_to_event
    assert {str(c): k.DESCRIPTOR.full_name for c, k in loaded.items()} == theirs["events"]
    assert [[n, ctypes.sizeof(k)] for n, k in neonize_core.ProxySettings._fields_] == \
        theirs["proxy"]
    assert ctypes.sizeof(neonize_core.ProxySettings) == theirs["proxy_size"]
    assert [[n, ctypes.sizeof(k)] for n, k in neonize_core.BytesReturn._fields_] == \
        theirs["bytes"]


def test_loading_skips_neonizes_python_client() -> None:
    """The Go core and the protobuf modules, not the `neonize` package: no PIL, httpx, ...
    and neonize's `__init__` never runs (its classes would be under `neonize.*`)."""
    loaded = run_python("""
import json, sys
from salon_sessions.worker.neonize.go import load_neonize
nz = load_neonize()
print(json.dumps({"modules": sorted(sys.modules), "version": nz.version,
                  "message": nz.proto.Message.DESCRIPTOR.full_name}))
""")
    modules = set(loaded["modules"])
    assert "neonize.proto.Neonize_pb2" in modules
    assert "waE2E.WAWebProtobufsE2E_pb2" in modules
    assert not {"neonize", "neonize.proto", "neonize.client", "neonize.events",
                "neonize._binder"} & modules
    assert not {m.split(".")[0] for m in modules} & {"PIL", "httpx", "linkpreview", "bs4",
                                                       "segno", "magic", "requests"}
    assert loaded["version"] == "0.5.2"
    assert loaded["message"] == "neonize.Message"


def test_stop_and_disconnect_return_nothing() -> None:
    """Go's `Stop` and `Disconnect` return void; the wheel's prototype decodes (and frees)
    whatever `Stop` leaves in the return register. Ours return None, even for a client
    that does not exist."""
    nz = load_neonize()
    assert nz.gocode.Stop.restype is None
    assert nz.gocode.Stop(b"company_0-unknown") is None
    assert nz.gocode.Disconnect(b"company_0-unknown") is None


def _core_mappings(path: Path) -> list[dict[str, Any]]:
    maps: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            current = None
            if len(head) == 6 and head[5] == str(path):
                start, end = (int(x, 16) for x in head[0].split("-"))
                current = {"start": start, "end": end, "perms": head[1], "anonymous": 0}
                maps.append(current)
        elif current is not None and line.startswith("Anonymous:"):
            current["anonymous"] = int(line.split()[1])
    return maps


def test_only_clean_read_only_pages_of_the_core_are_released() -> None:
    """`MADV_DONTNEED` on a page the dynamic linker relocated (or Go wrote) would throw the
    change away: the release must pick only unwritable mappings without anonymous pages,
    and the core keeps working after it."""
    nz = load_neonize()
    path = (neonize_core.package_dir() / neonize_core.core_library_name()).resolve()
    mappings = _core_mappings(path)
    picked = {(start, end) for start, end, _ in neonize_core._clean_readonly_mappings(
        str(path))}
    assert picked
    for m in mappings:
        clean = "w" not in m["perms"] and m["anonymous"] == 0
        assert ((m["start"], m["end"]) in picked) == clean, m
    assert any(m["anonymous"] for m in mappings)  # the relocated data exists, left alone
    neonize_core.release_clean_pages(path)
    assert nz.gocode.GetVersion() == nz.version.encode()
