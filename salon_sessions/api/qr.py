"""QR rendering (segno): PNG and SVG for the API, half-block text for terminals."""

from __future__ import annotations

import io

import segno

BORDER = 4  # the quiet zone the QR standard asks for


def _make(payload: str) -> segno.QRCode:
    # WhatsApp's own QR codes use error correction L; `boost_error` raises it while the
    # version (size) stays the same.
    return segno.make_qr(payload, error="L", boost_error=True)


def png(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    _make(payload).save(out, kind="png", scale=scale, border=BORDER)
    return out.getvalue()


def svg(payload: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    _make(payload).save(out, kind="svg", scale=scale, border=BORDER, xmldecl=False,
                        svgclass="qr", lineclass=None, title="WhatsApp QR code",
                        light="#fff")
    return out.getvalue()


def terminal(payload: str, *, compact: bool = True) -> str:
    """Text for a terminal: half blocks (two modules per character row) by default, else
    ANSI colours. Light modules are drawn, so it reads on a dark terminal background."""
    out = io.StringIO()
    _make(payload).terminal(out=out, compact=compact, border=BORDER)
    return out.getvalue()
