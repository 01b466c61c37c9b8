"""Pure ASGI middleware: request limits, request metrics and the access log.

- Bodies larger than `max_body_bytes` get 413 (by Content-Length, or while reading a
  chunked body); a non-empty body that is not `application/json` gets 415.
- The access log names the route template (`/v1/sessions/{company_id}/qr.png`), never the
  query string or a header, so that no token ends up in a log line.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from salon_sessions.api.errors import ApiError, error_response
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id

log = logging.getLogger("salon_sessions.api.access")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                             and media.endswith("+json"))


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max:
            await self._reject(scope, receive, send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max:
                await self._reject(scope, receive, send, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and not _is_json(_header(scope, b"content-type")):
            await self._reject(scope, receive, send, ApiError(
                415, "unsupported_media_type", "the body must be application/json",
                field="header.content-type"))
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, "payload_too_large",
                        f"the body is larger than {self.max} bytes", field="body")

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
        await error_response(exc)(scope, receive, send)


class AccessLog:
    """Request latency histogram (by route template) and one log line per request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            method = str(scope["method"])
            self.metrics.requests.labels(method, route, str(status)).observe(seconds)
            if route not in ("/metrics", "/healthz", "/readyz"):
                company = _company(scope)
                log.info("%s %s %d %.1fms", method, route, status, seconds * 1e3,
                         extra={"company_id": company, "status": status})


def _company(scope: Scope) -> str | None:
    raw = (scope.get("path_params") or {}).get("company_id")
    try:
        return canonical_company_id(raw) if isinstance(raw, str) else None
    except InvalidCompanyId:
        return None  # whatever was typed there is not logged


_FIXED_PATHS = frozenset({"/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"})


def _route(scope: Scope) -> str:
    """The route template (bounded label values; no ids, no junk typed into URLs)."""
    path = getattr(scope.get("route"), "path", None)
    if path:
        return str(path)
    raw = str(scope.get("path", ""))
    if raw in _FIXED_PATHS:
        return raw
    return "/static/{file}" if raw.startswith("/static/") else "unmatched"
