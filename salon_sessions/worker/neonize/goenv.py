"""The Go core's environment (memory bounds, the bot-label switch), in place before Go starts.

neonize's Go core reads `GOMEMLIMIT` and `GOGC` once, when its runtime starts at dlopen,
and `NEONIZE_BOT_TAG` at every send. A Go c-shared library takes its environment from the
process's initial stack, i.e. the environment the process was *exec*ed with, not from the
C `environ` that `os.environ` edits: setting `os.environ["GODEBUG"]` before dlopen has no
effect, the same variable given at exec has (checked with `GODEBUG=inittrace=1`, and in
`tests/worker/test_goenv.py`). So the worker, once it knows its settings and before it
loads the core, executes itself again with the variables added (`reexec_with`): same pid,
same arguments, nothing imported twice (the first image is replaced).

- `NEONIZE_BOT_TAG`: unless it is `off`, neonize adds a `<bot biz_bot="1"/>` node to every
  message sent to a phone-number chat and recipients see it labelled as sent by a bot (and
  not in LID chats). Off unless the worker's `bot_label` setting asks for it.
- `GOMEMLIMIT`: a share of the container's memory limit (`SALON_MEMORY_LIMIT_BYTES`, from
  the downward API), leaving the rest to Python: Go collects harder as it nears it instead
  of growing into an OOM kill. Without a known limit, none.
- `GOGC`: Go's collection target; an explicit `GOMEMLIMIT` or `GOGC` in the environment
  wins over the derived one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NoReturn

log = logging.getLogger(__name__)

BOT_TAG_VARIABLE: Final = "NEONIZE_BOT_TAG"
REEXEC_MARKER: Final = "SALON_GO_ENV_APPLIED"
"""Set on the re-executed process: a second mismatch is logged, never looped on."""


def go_environment(*, bot_label: bool, memory_limit_bytes: int | None,
                   memory_limit_percent: int, gc_percent: int,
                   explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the Go core must find at exec, from the worker's settings.

    `explicit`: the current environment; a `GOMEMLIMIT` / `GOGC` already in it is kept."""
    explicit = explicit or {}
    env = {BOT_TAG_VARIABLE: "on" if bot_label else "off"}
    env["GOGC"] = explicit.get("GOGC") or str(gc_percent)
    if explicit.get("GOMEMLIMIT"):
        env["GOMEMLIMIT"] = explicit["GOMEMLIMIT"]
    elif memory_limit_bytes:
        env["GOMEMLIMIT"] = str(memory_limit_bytes * memory_limit_percent // 100)
    return env


def exec_environment(pid: int | str = "self") -> dict[str, str]:
    """The environment a process was executed with (what Go reads): `/proc/<pid>/environ`.

    Falls back to `os.environ` where /proc is missing."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def missing(wanted: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """The wanted variables that `current` lacks or has with another value."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def reexec_with(env: Mapping[str, str]) -> NoReturn:
    """Replace this process by itself with `env` added to its environment.

    Called before the Go core is loaded and before any thread is started: `execve` keeps
    the pid (the pod's main process stays the main process) and its open descriptors that
    are not close-on-exec (stdout/stderr)."""
    new_env = {**os.environ, **env, REEXEC_MARKER: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, new_env)


def ensure(wanted: Mapping[str, str]) -> None:
    """Re-execute unless the exec-time environment already has `wanted` (at most once)."""
    lacking = missing(wanted, exec_environment())
    if not lacking:
        return
    if os.environ.get(REEXEC_MARKER):
        log.error("the Go core's environment could not be set (%s still differ after a "
                  "re-exec); continuing without it", ", ".join(sorted(lacking)))
        return
    reexec_with(wanted)
