"""Start and stop the stack's long-running processes, tracked by pid files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StartError(RuntimeError):
    """A component did not start; the message names it and its log file."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_dir(state_dir: Path) -> Path:
    d = state_dir / "pids"
    d.mkdir(parents=True, exist_ok=True)
    return d


def spawn(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, output to logs/<name>.log, pid to pids/<name>.pid."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    (pid_dir(state_dir) / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartError(f"{what} exited with code {proc.returncode}; see {log}\n{tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise StartError(f"{what} not ready after {timeout:.0f}s; see {log}\n{tail(log)}")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 200 (for readiness checks with `wait_until`)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z") is False
    except OSError:
        return False


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL it after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int | None:
    """SIGTERM a child we started, SIGKILL it after `grace` seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def stop_all(state_dir: Path, order: Sequence[str] = ()) -> list[str]:
    """Stop every process with a pid file in `state_dir` (named ones first, in order)."""
    pids = pid_dir(state_dir)
    files = {p.stem: p for p in pids.glob("*.pid")}
    names = [n for n in order if n in files] + sorted(n for n in files if n not in order)
    stopped = []
    for name in names:
        path = files[name]
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            path.unlink(missing_ok=True)
            continue
        if pid_alive(pid):
            stop_pid(pid)
            stopped.append(name)
        path.unlink(missing_ok=True)
    return stopped


def stop_named(state_dir: Path, names: Sequence[str]) -> list[str]:
    """Stop the processes of these pid files only (in this order); the others keep running."""
    stopped = []
    for name in names:
        path = pid_dir(state_dir) / f"{name}.pid"
        if not path.exists():
            continue
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            pid = 0
        if pid and pid_alive(pid):
            stop_pid(pid)
            stopped.append(name)
        path.unlink(missing_ok=True)
    return stopped
