"""Filters for uvicorn's own log lines.

- uvicorn logs WebSocket handshakes as `"WebSocket /path?query" 403`: the query string is
  cut off (a client could put anything there, a token included).
- At DEBUG level the WebSocket protocol logs every frame (`> TEXT '{...}'`), which would
  put QR payloads and pairing codes in the log: frame lines are dropped at any level.
- After a WebSocket denial response (401/403 with a JSON body, an ASGI extension) uvicorn
  also logs "ASGI callable returned without completing handshake." at ERROR although the
  response was sent; that false alarm is dropped.
"""

from __future__ import annotations

import logging

_FALSE_ALARM = "ASGI callable returned without completing handshake."
_FRAME_PREFIXES = ("< ", "> ", "= ", "x ", "! ", "% ")
QUIET_LOGGERS = ("kubernetes_asyncio", "websockets", "aiohttp", "asyncio", "hpack")
"""Libraries whose DEBUG output may carry request bodies or headers: kept at INFO."""


class UvicornLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _FALSE_ALARM:
            return False
        if (record.levelno <= logging.DEBUG and isinstance(record.msg, str)
                and record.msg.startswith(_FRAME_PREFIXES)):
            return False
        if (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg
                and isinstance(record.args, tuple)):
            args = tuple(a.split("?", 1)[0] if isinstance(a, str) and a.startswith("/") else a
                         for a in record.args)
            record.args = args
        return True


def install() -> None:
    logging.getLogger("uvicorn.error").addFilter(UvicornLogFilter())
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
