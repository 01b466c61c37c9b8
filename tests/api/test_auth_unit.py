"""Onboarding tokens and the admin token, without servers."""

from __future__ import annotations

import base64
import json

import pytest

from salon_sessions.api.auth import (
    Admin,
    Authenticator,
    CompanyPrincipal,
    TokenSigner,
    bearer_from_headers,
    bearer_from_subprotocols,
)
from salon_sessions.api.errors import ApiError

SECRET = b"0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_round_trip_and_expiry() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, clock)
    token, expires = signer.issue("962302", 60)
    principal = signer.verify(token)
    assert principal == CompanyPrincipal("company_962302", expires)
    clock.now += 59
    assert signer.verify(token).company_id == "company_962302"
    clock.now += 1
    with pytest.raises(ApiError) as err:
        signer.verify(token)
    assert (err.value.status, err.value.message) == (401, "token expired")


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return result


def _forge(token: str, **claims: object) -> str:
    version, _, signature = token.split(".")
    body = json.dumps(_claims(token) | claims).encode()
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return f"{version}.{payload}.{signature}"


@pytest.mark.parametrize("mangle", [
    lambda t: _forge(t, sub="company_1"),           # another company, old signature
    lambda t: _forge(t, exp=4_000_000_000),          # a longer life, old signature
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
    lambda t: t.replace("v1.", "v2.", 1),
    lambda t: t.split(".")[0] + "." + t.split(".")[1],  # no signature
    lambda t: "",
    lambda t: "v1.%%%.%%%",
    lambda t: t + "x" * 600,
], ids=["company", "expiry", "signature", "version", "unsigned", "empty", "garbage", "long"])
def test_tampered_tokens_are_refused(mangle: object) -> None:
    signer = TokenSigner(SECRET, Clock())
    token, _ = signer.issue("company_962302", 3600)
    assert callable(mangle)
    with pytest.raises(ApiError) as err:
        signer.verify(mangle(token))
    assert err.value.status == 401
    assert err.value.field == "header.authorization"


def test_token_signed_with_another_secret_is_refused() -> None:
    token, _ = TokenSigner(b"another-secret-another-secret!!").issue("company_1", 60)
    with pytest.raises(ApiError) as err:
        TokenSigner(SECRET).verify(token)
    assert err.value.status == 401


def test_authenticator_admin_company_and_other_company() -> None:
    signer = TokenSigner(SECRET)
    auth = Authenticator("admin-token-0123456789", signer)
    token, _ = signer.issue("company_1", 60)
    assert auth.admin("admin-token-0123456789") == Admin()
    assert isinstance(auth.company("admin-token-0123456789", "company_2"), Admin)
    assert isinstance(auth.company(token, "company_1"), CompanyPrincipal)
    with pytest.raises(ApiError) as err:
        auth.company(token, "company_2")
    assert err.value.status == 403
    with pytest.raises(ApiError) as err:
        auth.admin(token)  # a company token is not an admin token
    assert err.value.status == 403
    for bad in (None, "", "admin-token-0123456788", "Bearer x"):
        with pytest.raises(ApiError) as err:
            auth.company(bad, "company_1")
        assert err.value.status == 401


def test_token_sources() -> None:
    assert bearer_from_headers({"authorization": "Bearer abc"}) == "abc"
    assert bearer_from_headers({}) is None
    with pytest.raises(ApiError):
        bearer_from_headers({"authorization": "Basic abc"})
    assert bearer_from_subprotocols(["salon.v1", "bearer.v1.a.b"]) == "v1.a.b"
    assert bearer_from_subprotocols(["salon.v1"]) is None


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSigner(b"short")
