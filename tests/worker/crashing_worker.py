"""The real `salon-sessions worker`, unchanged, plus a way to make its Go core panic from
inside the process: for the crash containment test, not a product hook.

`python crashing_worker.py` runs the worker's own entry point (`salon_sessions.cli.main
(["worker"])`) in the main thread. A daemon thread waits for the file named by
`SALON_TEST_CRASH_TRIGGER` to appear, then calls neonize's Go export `GetLIDFromPN` for a
client uuid that does not exist: its Go code reads `clients[uuid].Store` from a nil
`*whatsmeow.Client`, a nil-pointer dereference that Go cannot recover from in an exported
(cgo) call, so the runtime prints the panic and aborts the whole process - the same fate
as any Go-side panic while the worker runs (docs/NEONIZE.md, "Limits").
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path

TRIGGER_ENV = "SALON_TEST_CRASH_TRIGGER"
NO_SUCH_CLIENT = b"no-such-client"


def crash_when_triggered(trigger: Path) -> None:
    while not trigger.exists():
        time.sleep(0.05)
    from salon_sessions.worker.neonize.go import load_neonize

    nz = load_neonize()  # the Go core the running driver already loaded
    jid = nz.proto.JID(User="79686484488", Server="s.whatsapp.net", Device=0, RawAgent=0,
                       Integrator=0, IsEmpty=False).SerializeToString()
    lookup = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                              ctypes.c_int)(("GetLIDFromPN", nz.gocode))
    print("crashing_worker: calling Go GetLIDFromPN for a client that does not exist",
          flush=True)
    lookup(NO_SUCH_CLIENT, jid, len(jid))
    print("crashing_worker: Go returned; no panic", flush=True)
    os._exit(97)  # the test fails on this exit code: the crash did not happen


def main() -> int:
    trigger = Path(os.environ[TRIGGER_ENV])
    threading.Thread(target=crash_when_triggered, args=(trigger,), name="crash-trigger",
                     daemon=True).start()
    from salon_sessions.cli import main as cli_main

    return cli_main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
