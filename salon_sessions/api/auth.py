"""Who is calling: the admin (management calls) or one company (its onboarding page).

- Admin: `Authorization: Bearer <admin token>`; the token comes from a Secret
  (`SALON_ADMIN_TOKEN`) and is compared in constant time.
- Company: a signed onboarding token, `v1.<payload>.<signature>` (base64url), where the
  payload is `{"sub": "company_962302", "iat": ..., "exp": ...}` and the signature is
  HMAC-SHA256 with `SALON_TOKEN_SECRET`. It is valid for its company only, until `exp`.
  The onboarding link carries it in the URL fragment (`#token=...`), which browsers never
  send to a server, so it reaches neither access logs nor proxies.

Tokens are read from the `Authorization` header, or for WebSockets (browsers cannot set
headers there) from the `Sec-WebSocket-Protocol` offer `bearer.<token>`. Never from a query
string. Missing, malformed, tampered or expired tokens give 401; a valid token for another
company gives 403. Nothing here logs a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from salon_sessions.api.errors import ApiError
from salon_sessions.core.company import canonical_company_id, is_canonical

TOKEN_VERSION: Final = "v1"
WS_SUBPROTOCOL: Final = "salon.v1"
WS_BEARER_PREFIX: Final = "bearer."
MAX_TOKEN_CHARS: Final = 512
AUTH_FIELD: Final = "header.authorization"


@dataclass(frozen=True, slots=True)
class Admin:
    """The platform: may manage every company's session."""


@dataclass(frozen=True, slots=True)
class CompanyPrincipal:
    company_id: str
    expires_at: datetime


Principal = Admin | CompanyPrincipal


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies company-scoped onboarding tokens."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._key = secret
        self._clock = clock

    def _sign(self, message: bytes) -> str:
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, company_id: str | int, ttl_s: int) -> tuple[str, datetime]:
        now = int(self._clock())
        exp = now + ttl_s
        claims = {"sub": canonical_company_id(company_id), "iat": now, "exp": exp}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        head = f"{TOKEN_VERSION}.{payload}"
        return f"{head}.{self._sign(head.encode())}", datetime.fromtimestamp(exp, UTC)

    def verify(self, token: str) -> CompanyPrincipal:
        """The token's company; raises `ApiError(401)` for anything not valid now."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("malformed token")
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != TOKEN_VERSION or not payload or not signature:
            raise _unauthorized("malformed token")
        expected = self._sign(f"{version}.{payload}".encode())
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise _unauthorized("invalid token signature")
        try:
            claims = json.loads(_unb64(payload))
            company = claims["sub"]
            exp = claims["exp"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _unauthorized("malformed token") from None
        if not isinstance(company, str) or not is_canonical(company) or type(exp) is not int:
            raise _unauthorized("malformed token")
        if exp <= self._clock():
            raise _unauthorized("token expired")
        return CompanyPrincipal(company, datetime.fromtimestamp(exp, UTC))


class Authenticator:
    def __init__(self, admin_token: str | None, signer: TokenSigner | None) -> None:
        self._admin = admin_token.encode() if admin_token else None
        self.signer = signer

    def principal(self, token: str | None) -> Principal:
        if not token:
            raise _unauthorized("missing bearer token")
        if self._admin is not None and hmac.compare_digest(token.encode(), self._admin):
            return Admin()
        if not token.startswith(f"{TOKEN_VERSION}."):
            raise _unauthorized("invalid token")
        if self.signer is None:
            raise ApiError(503, "auth_unconfigured",
                           "onboarding tokens are not configured on this server")
        return self.signer.verify(token)

    def admin(self, token: str | None) -> Admin:
        principal = self.principal(token)
        if not isinstance(principal, Admin):
            raise ApiError(403, "forbidden", "this call needs the admin token",
                           field=AUTH_FIELD)
        return principal

    def company(self, token: str | None, company_id: str) -> Principal:
        """Admin, or a token of exactly this company (403 for another company's token)."""
        principal = self.principal(token)
        if isinstance(principal, CompanyPrincipal) and principal.company_id != company_id:
            raise ApiError(403, "forbidden", "the token is for another company",
                           field=AUTH_FIELD)
        return principal


def bearer_from_headers(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    return token.strip()


def bearer_from_subprotocols(offered: list[str]) -> str | None:
    for proto in offered:
        if proto.startswith(WS_BEARER_PREFIX):
            return proto.removeprefix(WS_BEARER_PREFIX)
    return None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, field=AUTH_FIELD,
                    headers={"WWW-Authenticate": "Bearer"})


__all__ = ["Admin", "Authenticator", "CompanyPrincipal", "Principal",
           "TokenSigner", "bearer_from_headers", "bearer_from_subprotocols"]
