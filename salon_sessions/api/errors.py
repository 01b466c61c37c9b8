"""One JSON shape for every error the API returns, and the handlers that produce it.

    {"error": {"code": "invalid", "message": "...", "field": "body.phone",
               "fields": [{"field": "body.phone", "message": "..."}]}}

`field` names the offending part of the request (`path.company_id`, `body.phone`,
`header.authorization`, ...). Messages never echo the input: a phone number, a token or a
QR payload typed into the wrong place must not come back in a response or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Exception)


class FieldError(BaseModel):
    field: str = Field(examples=["body.phone"])
    message: str = Field(examples=["invalid value: 5 digits, expected 8 to 15"])


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, snake_case", examples=["invalid"])
    message: str = Field(description="for humans; never echoes the input")
    field: str | None = Field(
        default=None, description="the request part at fault", examples=["body.phone"])
    fields: list[FieldError] = Field(default_factory=list,
                                     description="every invalid field (validation errors)")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by handlers and dependencies; rendered as `ErrorBody`."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message,
                                           field=self.field)).model_dump()


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


_STATUS_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid",
    429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _message(err: ErrorDetails) -> str:
    """Pydantic's message, except for value errors raised by our own validators, whose
    messages quote the input: those give their `why` (e.g. "5 digits, expected 8 to 15")."""
    if err["type"] != "value_error":
        return err["msg"]
    error = err.get("ctx", {}).get("error")
    why = getattr(error, "why", None)
    return f"invalid value: {why}" if isinstance(why, str) else "invalid value"


def validation_fields(errors: list[ErrorDetails]) -> list[FieldError]:
    return [FieldError(field=_where(e["loc"]), message=_message(e)) for e in errors[:20]]


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw: list[ErrorDetails] = list(exc.errors())
    fields = validation_fields(raw)
    first = fields[0] if fields else FieldError(field="body", message="invalid request")
    detail = ErrorDetail(code="invalid", field=first.field, fields=fields,
                         message=f"invalid request: {first.field}: {first.message}")
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=422)


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI: a body it cannot decode (e.g. not UTF-8)
        return error_response(ApiError(422, "invalid", "the body is not valid UTF-8 JSON",
                                       field="body"))
    code = _STATUS_CODES.get(exc.status_code, "error")
    field = "path" if exc.status_code in (404, 405) else None
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    return error_response(ApiError(exc.status_code, code, message, field=field,
                                   headers=headers))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s: %s", request.method, request.url.path,
              type(exc).__name__, exc_info=exc)
    return error_response(ApiError(500, "internal_error", "internal error"))


def translate(app: FastAPI, kind: type[E], to_http: Callable[[E], ApiError]) -> None:
    """Answer every `kind` (a domain error raised below the routes: an adapter's, a
    reader's) with `to_http(exc)`, so that adapters never build HTTP errors themselves."""
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, kind)
        return error_response(to_http(exc))

    app.add_exception_handler(kind, handler)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
    amend_openapi(app, _add_error_schemas)


def amend_openapi(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Let `amend` change the OpenAPI document once, when it is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            amend(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_schemas(schema: dict[str, Any]) -> None:
    """`ErrorBody` in components, and FastAPI's default 422 (`HTTPValidationError`)
    replaced by it: every error the API returns has this one shape."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorBody"] = body
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = {"application/json": {"schema": ref}}
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error codes a route can return (always JSON,
    also on routes whose success is an image or a page; `ErrorBody` is registered in the
    schema's components by `install`)."""
    texts = {
        400: "Bad request", 401: "Missing, malformed, tampered or expired token",
        403: "The token is valid but for another company (or not an admin token)",
        404: "Unknown company session, or nothing to return yet",
        409: "Conflicts with the session's state (e.g. already linked, a code pending)",
        413: "Request body too large", 415: "Content type is not application/json",
        422: "Invalid input; `error.field` names it", 429: "Rate limited (see Retry-After)",
        503: "A dependency (worker, Redis, Kubernetes API) is unavailable",
        504: "The worker did not answer in time",
    }
    return {code: {"description": texts.get(code, "Error"), "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}} for code in codes}
