"""Decode QR codes with zbar (the `zbarimg` CLI of Debian's zbar-tools), and turn the
terminal rendering back into an image."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

FULL, UPPER, LOWER = "\u2588", "\u2580", "\u2584"


def decode(path: Path) -> list[str]:
    """Every QR payload zbar finds in the image (empty when none)."""
    out = subprocess.run(["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable",
                          str(path)], capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line]


def terminal_to_png(text: str, path: Path, scale: int = 4) -> Path:
    """Half-block terminal text (light modules drawn as blocks) -> a black-on-white PNG."""
    rows: list[list[int]] = []  # 1 = light
    for line in text.splitlines():
        top = [1 if c in (FULL, UPPER) else 0 for c in line]
        bottom = [1 if c in (FULL, LOWER) else 0 for c in line]
        rows += [top, bottom]
    width = max(len(r) for r in rows)
    rows = [r + [1] * (width - len(r)) for r in rows]
    return write_png(rows, path, scale)


def write_png(rows: list[list[int]], path: Path, scale: int) -> Path:
    raw = bytearray()
    for row in rows:
        line = bytes(255 if v else 0 for v in row for _ in range(scale))
        for _ in range(scale):
            raw += b"\x00" + line
    height, width = len(rows) * scale, len(rows[0]) * scale

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                            0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return path
