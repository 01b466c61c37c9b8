"""Redaction of credentials in URLs and log lines."""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK: Final = "***"
_SECRET_PARAMS: Final = frozenset({"password", "passwd", "pwd", "sslpassword", "token"})
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_PARAM = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|sslpassword|token)=[^&\s'\"]+")


def redact_url(url: str) -> str:
    """`redis://:s3cret@host:6379/0` -> `redis://:***@host:6379/0` (also `?password=`)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on garbage
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Mask URL passwords and `password=` parameters anywhere in free text."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _PARAM.sub(lambda m: f"{m['key']}={MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in the formatted message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
