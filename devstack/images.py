"""The local node's images, built without a registry or a Docker engine (dev only).

A real kubelet runs containers from images, and these machines have no registry to pull them
from. So the images are built here and handed to containerd as docker-save archives:

- the pause image: Debian's static catatonit as /pause (what `sandbox_image` runs);
- CoreDNS: the static coredns binary that scripts/build-k8s.sh builds.

Each archive is cached in ~/.cache/salon-sessions/images/ under a name that changes with its
inputs, so it is built once per machine and rebuilt only when they change. Nothing in
salon_sessions/ imports this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("SALON_CACHE_DIR")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "salon-sessions")
IMAGES_DIR = CACHE_DIR / "images"
CATATONIT = Path("/usr/bin/catatonit")


def write_docker_archive(path: Path, tag: str, layers: Sequence[Path],
                         config: Mapping[str, Any]) -> None:
    """Write a docker-save archive (what `docker save` writes and `ctr images import` and
    `buildah pull docker-archive:` read): `manifest.json`, `repositories`, the image config
    with `rootfs.diff_ids`, and each layer (an uncompressed tar) as `<diff_id>/layer.tar`.
    `config` is the runtime part of the config (Entrypoint, Env, User, ...)."""
    diff_ids = [hashlib.sha256(layer.read_bytes()).hexdigest() for layer in layers]
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
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        for digest, layer in zip(diff_ids, layers, strict=True):
            tar.add(layer, arcname=f"{digest}/layer.tar")
        for name, data in meta.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    partial.replace(path)


def write_file_layer(path: Path, files: Mapping[str, Path]) -> None:
    """A layer tar of single files (image path -> host file), reproducible: root-owned, mode
    0755, mtime 0, so the same files give the same diff_id."""
    with tarfile.open(path, "w") as tar:
        for name, source in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = source.stat().st_size
            info.mode = 0o755
            with source.open("rb") as f:
                tar.addfile(info, f)


def _one_file_image(archive: Path, tag: str, files: Mapping[str, Path],
                    config: Mapping[str, Any]) -> bool:
    """Build a one-layer image from files unless its archive exists; True when it did."""
    if archive.exists():
        return False
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        write_file_layer(layer, files)
        write_docker_archive(archive, tag, [layer], config)
    return True


def _tag_part(version: str) -> str:
    """A Debian or Go version as an image tag (no `+` or `~` there)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in version)


def _dpkg_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                          text=True, check=True).stdout.strip()


def _archive(tag: str) -> Path:
    return IMAGES_DIR / (tag.removeprefix("localhost/").replace(":", "-") + ".tar")


def pause_image() -> tuple[str, Path, bool]:
    """`localhost/salon-pause:<catatonit's Debian version>`: catatonit is static, so the
    image is that one file. `-P` makes it a pause process (no child, reaps zombies)."""
    tag = f"localhost/salon-pause:{_tag_part(_dpkg_version('catatonit'))}"
    archive = _archive(tag)
    built = _one_file_image(archive, tag, {"/pause": CATATONIT},
                            {"Entrypoint": ["/pause", "-P"]})
    return tag, archive, built


def versions() -> dict[str, str]:
    """scripts/versions.env (the pins of the Go-built tools)."""
    lines = (REPO / "scripts" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")


def coredns_image(bin_dir: Path) -> tuple[str, Path, bool]:
    """`localhost/salon-coredns:<COREDNS_VERSION>` from scripts/build-k8s.sh's coredns
    (built with CGO_ENABLED=0, hence static: the image is that one file)."""
    tag = f"localhost/salon-coredns:{_tag_part(versions()['COREDNS_VERSION'])}"
    archive = _archive(tag)
    built = _one_file_image(archive, tag, {"/coredns": (bin_dir / "coredns").resolve()},
                            {"Entrypoint": ["/coredns"], "ExposedPorts": {"53/udp": {},
                                                                        "53/tcp": {}}})
    return tag, archive, built


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
