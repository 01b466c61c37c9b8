"""The local node's images, built without a registry or a Docker engine (dev only).

A real kubelet runs containers from images, and these machines have no registry to pull them
from. So the images are built here and handed to containerd as docker-save archives:

- the pause image: Debian's static catatonit as /pause (containerd's `sandbox_image`);
- CoreDNS: the static coredns binary that scripts/build-k8s.sh builds;
- a stand-in for the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm), from Debian's
  packages with mmdebstrap;
- the project image, built by buildah from the project's own Dockerfile on that base: this
  build is the proof that the Dockerfile builds.

Each archive is cached in ~/.cache/salon-sessions/images/ under a name that changes with its
inputs (a version, a package list, a content hash), so it is built once and rebuilt only when
they change. `ensure_images()` is what the node code calls; `python -m devstack images` runs it.
Nothing in salon_sessions/ imports this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("SALON_CACHE_DIR")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "salon-sessions")
IMAGES_DIR = CACHE_DIR / "images"
CATATONIT = Path("/usr/bin/catatonit")

BASE_TAG = "localhost/salon-python:3.11-bookworm"
"""The stand-in for the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm): what its build
needs is `python` on PATH with venv, apt-get, groupadd/useradd and the CA certificates."""
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
BASE_SOURCES = (  # the host's mirror (/etc/apt/sources.list.d/debian.sources), as the slim image
    "deb http://deb.debian.org/debian bookworm bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_DPKG_OPTIONS = (  # as Debian's slim images: no manuals, translations or docs but licences
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
)
BASE_APT_CLEAN = (  # Debian's images' /etc/apt/apt.conf.d/docker-clean: no 80 MB of apt caches
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
)
BASE_RECIPE = 2
"""Part of the base's cache key with its inputs: bump it when base_image() builds differently."""
BASE_CONFIG = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "LANG=C.UTF-8"],
               "Cmd": ["python3"]}

PROJECT_REPO = "localhost/salon-sessions"
PROJECT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
BUILDAH_DIR = CACHE_DIR / "buildah"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Image:
    tag: str
    archive: Path
    cached: bool
    """False when this call built the archive."""


@dataclass(frozen=True)
class Images:
    pause: Image
    coredns: Image
    base: Image
    project: Image

    def for_node(self) -> dict[str, Path]:
        """Tag -> archive of the images the node runs (the base is only built upon)."""
        return {image.tag: image.archive for image in (self.pause, self.coredns, self.project)}


def ensure_images(bin_dir: Path | None = None) -> Images:
    """Build what is missing (see the module's docstring). `bin_dir`: scripts/build-k8s.sh's
    output, with coredns; by default the coredns that script caches (it runs only when that
    is missing: it builds every missing Kubernetes binary)."""
    coredns = (bin_dir / "coredns" if bin_dir is not None
               else CACHE_DIR / "tools" / f"coredns-{versions()['COREDNS_VERSION']}" / "coredns")
    if not coredns.exists():
        from devstack.stack import k8s_bin_dir

        coredns = k8s_bin_dir() / "coredns"
    with _locked():
        base = base_image()
        return Images(pause_image(), coredns_image(coredns), base, project_image(base))


@contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per machine (the stack, the tests and a shell may all ask)."""
    import fcntl

    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGES_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_docker_archive(path: Path, tag: str, layers: Sequence[Path],
                         config: Mapping[str, Any]) -> None:
    """Write a docker-save archive (what `docker save` writes and `ctr images import` and
    `buildah pull docker-archive:` read): `manifest.json`, `repositories`, the image config
    with `rootfs.diff_ids`, and each layer (an uncompressed tar) as `<diff_id>/layer.tar`.
    `config` is the runtime part of the config (Entrypoint, Env, User, ...)."""
    diff_ids = []
    for layer in layers:
        with layer.open("rb") as f:
            diff_ids.append(hashlib.file_digest(f, "sha256").hexdigest())
    image = {"architecture": "amd64", "os": "linux", "config": dict(config),
             "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
             "history": [{"created_by": "devstack/images.py"} for _ in layers]}
    config_json = json.dumps(image, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_json).hexdigest()}.json"
    repo, _, version = tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [tag],
                 "Layers": [f"{d}/layer.tar" for d in diff_ids]}]
    meta = {config_name: config_json,
            "manifest.json": json.dumps(manifest).encode(),
            "repositories": json.dumps({repo: {version: diff_ids[-1]}}).encode()}
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with tarfile.open(partial, "w") as tar:
        for digest, layer in zip(diff_ids, layers, strict=True):
            tar.add(layer, arcname=f"{digest}/layer.tar")
        for name, data in meta.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    partial.replace(path)


def write_file_layer(path: Path, files: Mapping[str, Path]) -> None:
    """A layer tar of single files (image path -> host file), reproducible: root-owned, the
    file's mode, mtime 0, so the same files give the same diff_id."""
    with tarfile.open(path, "w") as tar:
        for name, source in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = source.stat().st_size
            info.mode = source.stat().st_mode & 0o777
            with source.open("rb") as f:
                tar.addfile(info, f)


def _one_file_image(tag: str, files: Mapping[str, Path], config: Mapping[str, Any]) -> Image:
    """A one-layer image of files, unless its archive exists."""
    archive = _archive(tag)
    if archive.exists():
        return Image(tag, archive, cached=True)
    with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
        layer = Path(tmp) / "layer.tar"
        write_file_layer(layer, files)
        write_docker_archive(archive, tag, [layer], config)
    _drop_older(tag, archive)
    return Image(tag, archive, cached=False)


def _drop_older(tag: str, archive: Path, keep: int = 1) -> None:
    """Remove the archives of the same image under other inputs, but the newest `keep`."""
    name = tag.removeprefix("localhost/").split(":")[0]
    others = sorted((p for p in IMAGES_DIR.glob(f"{name}-*.tar") if p != archive),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep - 1:]:
        old.unlink()


def _tag_part(version: str) -> str:
    """A Debian or Go version as an image tag (no `+` or `~` there)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in version)


def _dpkg_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                          text=True, check=True).stdout.strip()


def _archive(tag: str) -> Path:
    return IMAGES_DIR / (tag.removeprefix("localhost/").replace(":", "-") + ".tar")


def pause_image() -> Image:
    """`localhost/salon-pause:<catatonit's Debian version>`: catatonit is static, so the
    image is that one file. `-P` makes it a pause process (no child, reaps zombies)."""
    tag = f"localhost/salon-pause:{_tag_part(_dpkg_version('catatonit'))}"
    return _one_file_image(tag, {"/pause": CATATONIT}, {"Entrypoint": ["/pause", "-P"]})


def base_image() -> Image:
    """BASE_TAG from Debian's packages with mmdebstrap (one layer), cached under a key of its
    suite, packages, sources and apt/dpkg settings: rebuilt only when those change."""
    inputs = [BASE_RECIPE, BASE_SUITE, BASE_PACKAGES, BASE_SOURCES, BASE_DPKG_OPTIONS,
              BASE_APT_CLEAN]
    key = hashlib.sha256(json.dumps(inputs).encode())
    archive = _archive(f"{BASE_TAG}-{key.hexdigest()[:12]}")
    if archive.exists():
        return Image(BASE_TAG, archive, cached=True)
    with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        # no device nodes in the layer: the runtime makes /dev
        _run(["mmdebstrap", "--quiet", "--variant=minbase", "--skip=output/dev",
              f"--include={','.join(BASE_PACKAGES)}",
              *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
              BASE_SUITE, str(rootfs), *BASE_SOURCES])
        # apt's settings as a layer of their own (mmdebstrap's customize hooks leave apt's
        # caches in the tree)
        clean, settings = Path(tmp) / "docker-clean", Path(tmp) / "apt.tar"
        clean.write_text(BASE_APT_CLEAN)
        write_file_layer(settings, {"/etc/apt/apt.conf.d/docker-clean": clean})
        write_docker_archive(archive, BASE_TAG, [rootfs, settings], BASE_CONFIG)
    _drop_older(BASE_TAG, archive)
    return Image(BASE_TAG, archive, cached=False)


def project_hash(base_archive: Path) -> str:
    """12 hex digits of sha256 over what goes into the project image: the Dockerfile, its
    .dockerignore, pyproject.toml, README.md, every file of salon_sessions/ (names and
    contents, sorted, no bytecode) and the base image's archive name (its key)."""
    package = sorted(path for path in (REPO / "salon_sessions").rglob("*")
                     if path.is_file() and "__pycache__" not in path.parts
                     and path.suffix != ".pyc")
    digest = hashlib.sha256(base_archive.name.encode())
    for path in [REPO / name for name in PROJECT_FILES] + package:
        digest.update(f"\0{path.relative_to(REPO)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def buildah(*args: str) -> list[str]:
    """buildah on its own storage under the cache, so the machine's default storage
    (/var/lib/containers) is left alone."""
    return ["buildah", "--root", str(BUILDAH_DIR / "root"), "--runroot",
            str(BUILDAH_DIR / "run"), "--storage-driver", "overlay", *args]


def project_image(base: Image) -> Image:
    """`localhost/salon-sessions:<project_hash>` built by buildah from the project's own
    Dockerfile, FROM the base image; rebuilt only when the hash changes. buildah's storage
    keeps the base image and the newest project image (its layers are the next build's
    cache); older project images are removed once the new one is archived."""
    tag = f"{PROJECT_REPO}:{project_hash(base.archive)}"
    archive = _archive(tag)
    if archive.exists():
        return Image(tag, archive, cached=True)
    base_id = json.loads(_archive_member(base.archive, "manifest.json"))[0]["Config"]
    inspect = subprocess.run(buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}",
                                     base.tag), capture_output=True, text=True)
    if inspect.returncode != 0 or f"{inspect.stdout.strip()}.json" != base_id:
        _run(buildah("pull", "--quiet", f"docker-archive:{base.archive}"))
    # the build's pip reaches PyPI through the host's TLS inspection: it needs the host's CA
    # bundle, mounted read-only where Debian's OpenSSL (and so pip's truststore) looks
    _run(buildah("bud", "--pull=never", "--network", "host", "--runtime", "/usr/sbin/runc",
                 "--layers", "--build-arg", f"PYTHON_IMAGE={base.tag}",
                 "-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
                 "-f", str(REPO / "Dockerfile"), "-t", tag, str(REPO)), timeout=1800)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    _run(buildah("push", "--quiet", tag, f"docker-archive:{partial}:{tag}"))
    partial.replace(archive)
    listed = subprocess.run(buildah("images", "--format", "{{.Name}}:{{.Tag}}"),
                            capture_output=True, text=True, check=True).stdout.split()
    older = [name for name in listed if name.startswith(f"{PROJECT_REPO}:") and name != tag]
    if older:
        _run(buildah("rmi", *older))
    # the layers only the older images used (not fatal: another build may be using some)
    subprocess.run(buildah("rmi", "--prune"), capture_output=True)
    _drop_older(tag, archive, keep=2)  # another worktree's image may be the other one
    return Image(tag, archive, cached=False)


def _archive_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None, f"{archive} has no {name}"
        return member.read()


def versions() -> dict[str, str]:
    """scripts/versions.env (the pins of the Go-built tools)."""
    lines = (REPO / "scripts" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")


def coredns_image(coredns: Path) -> Image:
    """`localhost/salon-coredns:<COREDNS_VERSION>` from scripts/build-k8s.sh's coredns
    (built with CGO_ENABLED=0, hence static: the image is that one file)."""
    tag = f"localhost/salon-coredns:{_tag_part(versions()['COREDNS_VERSION'])}"
    return _one_file_image(tag, {"/coredns": coredns.resolve()},
                           {"Entrypoint": ["/coredns"],
                            "ExposedPorts": {"53/udp": {}, "53/tcp": {}}})


def import_images(address: Path, archives: Mapping[str, Path]) -> list[str]:
    """Import the archives (tag -> archive) into containerd's `k8s.io` namespace (the
    kubelet's); the import unpacks them for the snapshotter. A tag containerd already lists
    is skipped. Returns the tags imported."""
    ctr = ["ctr", "--address", str(address), "-n", "k8s.io"]
    listed = set(subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True,
                                check=True).stdout.split())
    imported = []
    for tag, archive in archives.items():
        if tag in listed:
            continue
        _run([*ctr, "images", "import", str(archive)])
        imported.append(tag)
    return imported


def _run(argv: Iterable[str], **kwargs: Any) -> None:
    argv = list(argv)
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
