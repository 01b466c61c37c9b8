"""`make down` stops what the stack started, by pid, and leaves no process behind."""

from __future__ import annotations

import sys
from pathlib import Path

from devstack.procs import pid_alive, spawn, stop_all


def test_stop_all_kills_process_groups(tmp_path: Path) -> None:
    # a parent that starts a child in the same process group, as servers do
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "print(c.pid, flush=True); time.sleep(600)")
    procs = [spawn(tmp_path, f"p{i}", [sys.executable, "-u", "-c", script]) for i in range(2)]
    log = tmp_path / "logs" / "p0.log"
    import time

    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert pid_alive(child)
    stopped = stop_all(tmp_path)
    assert sorted(stopped) == ["p0", "p1"]
    for p in procs:
        p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child)
    assert not list((tmp_path / "pids").glob("*.pid"))


def test_devstack_down_stops_the_stack_of_the_given_state_dir(tmp_path: Path) -> None:
    from devstack.__main__ import main

    proc = spawn(tmp_path, "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    assert pid_alive(proc.pid)
    assert main(["down", "--state-dir", str(tmp_path)]) == 0
    proc.wait(timeout=10)
    assert not pid_alive(proc.pid)
    assert main(["--state-dir", str(tmp_path), "status"]) == 3  # nothing runs
