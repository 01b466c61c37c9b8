"""Server URLs with another user's credentials.

The operator hands every session pod URLs of the same servers as its own, with the
session's own Redis user and PostgreSQL role instead of its credentials (`operator.tenancy`).
One function for both, so the quoting of user names and passwords is done in one place.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def with_credentials(base_url: str, user: str, password: str) -> str:
    """`base_url` (scheme, host, port, database, options) with `user`'s credentials."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
