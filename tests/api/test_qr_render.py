"""QR rendering: PNG, SVG (rasterised by Chromium elsewhere) and terminal text decode with
zbar to the payload."""

from __future__ import annotations

from pathlib import Path

import pytest

from salon_sessions.api import qr
from tests.api.zbar import decode, terminal_to_png

# shaped like WhatsApp's: ref,noise key,identity key,adv secret
PAYLOAD = ("2@rA0kqQ4UAsq5bdrJ6SfPq2W0GNz8GvMCW6oZCPDdIiu4yN5v9SbW3GNnyCLLJNkWtrJ0Q0Uo0f0xF9k=,"
           "aGk1kJwNbSk4o3Srpd2yXhQh6CwkvJFQ8Y4aTtIdyhc=,"
           "pLsD5fKXcYDOT7T8Jw5Y3F0mZ0bq3GmLQp3r8R2d4VM=,"
           "K6l+2rOJZ3Z9bZ8o0iV0y0n5tN3pQ2bH1yS0mZ6kHcE=")


def test_png_decodes_to_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "qr.png"
    path.write_bytes(qr.png(PAYLOAD))
    assert decode(path) == [PAYLOAD]


def test_svg_is_a_standalone_image() -> None:
    svg = qr.svg(PAYLOAD).decode()
    assert svg.startswith("<svg")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert PAYLOAD not in svg  # drawn, not embedded as text


@pytest.mark.parametrize("payload", [PAYLOAD, "short"])
def test_terminal_text_decodes_to_the_payload(tmp_path: Path, payload: str) -> None:
    text = qr.terminal(payload)
    assert set(text) <= {" ", "\n", "\u2588", "\u2580", "\u2584"}
    assert decode(terminal_to_png(text, tmp_path / "term.png")) == [payload]
