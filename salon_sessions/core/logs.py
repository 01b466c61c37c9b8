"""Structured JSON logs, one object per line, with the company id on every line.

`configure_logging(component, company_id=...)` installs a handler on the root logger that
writes JSON with `ts`, `level`, `logger`, `component`, `company_id` (from the record's
`extra`, else the process's own company) and `message`, and masks credentials with
`RedactingFilter`. QR payloads and pairing codes are never passed to a logger: code that
handles them logs their length or a hash, not the value.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from salon_sessions.core.redact import RedactingFilter

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, company_id: str | None = None) -> None:
        super().__init__()
        self.component = component
        self.company_id = company_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "company_id": getattr(record, "company_id", None) or self.company_id,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                plain = isinstance(value, str | int | float | bool | None)
                out[key] = value if plain else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def configure_logging(component: str, *, level: str = "INFO", json_lines: bool = True,
                      company_id: str | None = None, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(component, company_id))
    else:
        prefix = f"{component} {company_id} " if company_id else f"{component} "
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
