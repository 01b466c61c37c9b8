"""What each layer of a worker process costs: run in a fresh process by `worker_memory`.

    .venv/bin/python -m benchmarks.worker_imports simulator|neonize

Imports the worker's layers one after the other in this one process and prints, after
each, one JSON line `{"step": ..., "rss_kib": ..., "anon_kib": ..., "file_kib": ...}`:
the difference between two lines is what that layer adds on top of the ones before it (a
module the layer shares with an earlier one is counted there). Nothing connects anywhere.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

STEPS: list[tuple[str, list[str]]] = [
    ("Python interpreter (with site)", []),
    ("standard library: asyncio, ssl, logging, argparse, json",
     ["asyncio", "ssl", "logging", "argparse", "json"]),
    ("asyncpg", ["asyncpg"]),
    ("redis (redis.asyncio)", ["redis.asyncio"]),
    ("pydantic", ["pydantic.main"]),
    ("pydantic-settings", ["pydantic_settings"]),
    ("prometheus_client", ["prometheus_client"]),
]
OUR_MODULES: dict[str, list[str]] = {
    "simulator": ["salon_sessions.worker.main", "salon_sessions.worker.session_worker",
                  "salon_sessions.worker.fence", "salon_sessions.worker.simulator.driver"],
    "neonize": ["salon_sessions.worker.main", "salon_sessions.worker.session_worker",
                "salon_sessions.worker.fence", "salon_sessions.worker.neonize.driver"],
}

PROTOBUF = ["google.protobuf.descriptor_pool", "google.protobuf.symbol_database",
            "google.protobuf.runtime_version", "google.protobuf.internal.builder"]
"""What every generated `*_pb2` module imports first."""


def status_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[name] = int(value.split()[0])
    return {"rss_kib": fields["VmRSS"], "anon_kib": fields["RssAnon"],
            "file_kib": fields["RssFile"] + fields.get("RssShmem", 0)}


def report(step: str) -> None:
    print(json.dumps({"step": step, **status_kib()}), flush=True)


def load_proto() -> None:
    from salon_sessions.worker.neonize import core as neonize_core

    neonize_core.load_proto(neonize_core.package_dir() / "proto")


def load_go_core() -> None:
    from salon_sessions.worker.neonize import core as neonize_core

    path = neonize_core.package_dir() / neonize_core.core_library_name()
    lib = neonize_core.load_library(path)
    lib.GetVersion()  # returns once Go's runtime and package inits have run
    neonize_core.release_clean_pages(path)
    time.sleep(1)  # Go's background workers start


def main() -> None:
    driver = sys.argv[1]
    steps: list[tuple[str, Callable[[], None]]] = [
        (name, lambda mods=mods: [importlib.import_module(m) for m in mods] and None)
        for name, mods in STEPS]
    steps.append(("our modules (salon_sessions: settings, events, worker runtime, driver)",
                  lambda: [importlib.import_module(m) for m in OUR_MODULES[driver]] and None))
    if driver == "neonize":
        steps.append(("protobuf runtime (google.protobuf, upb)",
                      lambda: [importlib.import_module(m) for m in PROTOBUF] and None))
        steps.append(("neonize's protobuf modules (Neonize_pb2 and the 18 it imports)",
                      load_proto))
        steps.append(("Go core: loaded and started, start-up pages released", load_go_core))
    for name, run in steps:
        run()
        report(name)


if __name__ == "__main__":
    main()
