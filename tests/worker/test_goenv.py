"""The Go core's environment: what it reads, and that the worker gets it there.

No stack: each case is a fresh Python process that loads the real Go core (neonize's
shared library), because Go reads its environment once, at the start of its runtime."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from salon_sessions.worker.neonize import goenv

LOAD_CORE = ("from salon_sessions.worker.neonize import core as c\n"
             "lib = c.load_library(c.package_dir() / c.core_library_name())\n"
             "print('core', lib.GetVersion().decode(), flush=True)\n")
GC_LINE = re.compile(r"^gc \d+ @.* (\d+) MB goal", re.MULTILINE)


def run_python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in goenv.exec_environment().items()
             if not k.startswith(("GO", "NEONIZE_", goenv.REEXEC_MARKER))}
    return subprocess.run([sys.executable, "-c", script], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=True)


def test_go_reads_the_exec_environment_not_os_environ() -> None:
    """Why the worker re-executes itself: GODEBUG set in os.environ before dlopen is
    ignored by Go, the same variable given at exec is not."""
    late = run_python("import os\nos.environ['GODEBUG'] = 'inittrace=1'\n" + LOAD_CORE, {})
    assert "core " in late.stdout
    assert "init runtime @" not in late.stderr
    at_exec = run_python(LOAD_CORE, {"GODEBUG": "inittrace=1"})
    assert "init runtime @" in at_exec.stderr


def test_ensure_reexecutes_once_and_go_applies_the_memory_limit() -> None:
    """`goenv.ensure` puts the variables into the exec-time environment (same pid), and
    Go runs with them: with GOGC=off Go collects only because of GOMEMLIMIT."""
    wanted = {"NEONIZE_BOT_TAG": "off", "GOGC": "off", "GOMEMLIMIT": "4MiB",
              "GODEBUG": "gctrace=1"}
    script = ("import os\nprint('pid', os.getpid(), flush=True)\n"
              "from salon_sessions.worker.neonize import goenv\n"
              f"goenv.ensure({wanted!r})\n" + LOAD_CORE +
              "env = goenv.exec_environment()\n"
              "print('env', env['NEONIZE_BOT_TAG'], env['GOMEMLIMIT'], flush=True)\n")
    out = run_python(script, {})
    pids = re.findall(r"^pid (\d+)$", out.stdout, re.MULTILINE)
    assert len(pids) == 2, out.stdout  # executed again once ...
    assert pids[0] == pids[1]  # ... as the same process
    assert "env off 4MiB" in out.stdout
    goals = [int(g) for g in GC_LINE.findall(out.stderr)]
    assert goals, out.stderr[-2000:]
    assert max(goals) <= 4
    # and without the limit, GOGC=off means no collection at all
    unlimited = run_python(LOAD_CORE, {"GOGC": "off", "GODEBUG": "gctrace=1"})
    assert not GC_LINE.findall(unlimited.stderr)


def test_ensure_never_loops() -> None:
    """A variable that cannot be set (here: the marker says we already re-executed) is
    logged once and the process goes on."""
    script = ("import logging\nlogging.basicConfig()\n"
              "from salon_sessions.worker.neonize import goenv\n"
              "goenv.ensure({'NEONIZE_BOT_TAG': 'off'})\nprint('went on')\n")
    out = run_python(script, {goenv.REEXEC_MARKER: "1"})
    assert out.stdout.strip() == "went on"
    assert "NEONIZE_BOT_TAG still differ" in out.stderr


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"bot_label": False, "memory_limit_bytes": 512 * 2**20, "memory_limit_percent": 50,
      "gc_percent": 100},
     {"NEONIZE_BOT_TAG": "off", "GOGC": "100", "GOMEMLIMIT": str(256 * 2**20)}),
    ({"bot_label": True, "memory_limit_bytes": None, "memory_limit_percent": 50,
      "gc_percent": 50},
     {"NEONIZE_BOT_TAG": "on", "GOGC": "50"}),
    ({"bot_label": False, "memory_limit_bytes": 100, "memory_limit_percent": 30,
      "gc_percent": 100, "explicit": {"GOMEMLIMIT": "1GiB", "GOGC": "off"}},
     {"NEONIZE_BOT_TAG": "off", "GOGC": "off", "GOMEMLIMIT": "1GiB"}),
])
def test_go_environment_from_the_settings(kwargs: dict[str, object],
                                          expected: dict[str, str]) -> None:
    assert goenv.go_environment(**kwargs) == expected  # type: ignore[arg-type]


def test_missing_compares_values() -> None:
    wanted = {"NEONIZE_BOT_TAG": "off", "GOGC": "100"}
    assert goenv.missing(wanted, {"NEONIZE_BOT_TAG": "off", "GOGC": "100", "X": "1"}) == {}
    assert goenv.missing(wanted, {"NEONIZE_BOT_TAG": "on"}) == wanted
