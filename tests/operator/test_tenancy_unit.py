"""The per-session credentials without servers: derived passwords, the Secret's shape, the
worker's Redis URL, the ACL rules."""

from __future__ import annotations

import base64

from salon_sessions.core import redis_acl
from salon_sessions.core.urls import with_credentials
from salon_sessions.operator.model import SessionModel
from salon_sessions.operator.registry import Session
from salon_sessions.operator.tenancy import derive_password, secret_manifest

KEY = b"k" * 32


def session(name: str = "company-1", uid: str = "u-1", namespace: str = "ns") -> Session:
    return Session(namespace=namespace, name=name, uid=uid, company="company_1", spec={},
                   generation=1, model=SessionModel())


def test_passwords_are_stable_per_session_and_differ_otherwise() -> None:
    one = derive_password(KEY, "redis", session())
    assert one == derive_password(KEY, "redis", session())
    assert len(one) == 43
    others = {derive_password(KEY, "database", session()),
              derive_password(KEY, "redis", session(uid="u-2")),  # recreated
              derive_password(KEY, "redis", session(namespace="other")),
              derive_password(b"x" * 32, "redis", session())}
    assert one not in others
    assert len(others) == 4


def test_the_secret_is_owned_labelled_and_holds_only_the_urls() -> None:
    body = secret_manifest(session(), {"redis-url": "redis://u:p@h:6379/0",
                                       "database-url": "postgresql://x"})
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"]) == ("company-1-credentials", "ns")
    assert meta["labels"]["app.kubernetes.io/component"] == "session-credentials"
    assert meta["labels"]["wa.salonsessions.io/company-id"] == "company_1"
    assert meta["ownerReferences"] == [{
        "apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
        "name": "company-1", "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert {k: base64.b64decode(v).decode() for k, v in body["data"].items()} == {
        "redis-url": "redis://u:p@h:6379/0", "database-url": "postgresql://x"}


def test_user_url_keeps_everything_but_the_credentials() -> None:
    assert with_credentials("rediss://:old@redis.cache:6380/2?ssl_cert_reqs=none",
                            "salon-session.ns.company-1", "p/w") == \
        "rediss://salon-session.ns.company-1:p%2Fw@redis.cache:6380/2?ssl_cert_reqs=none"
    assert with_credentials("redis://[::1]/0", "u", "p") == "redis://u:p@[::1]/0"


def test_session_rules_name_only_the_company_s_own_channels_and_keys() -> None:
    rules = redis_acl.session_rules("company_1")
    assert all("company_1" in r for r in rules if r[0] in "~%&")
    assert "-@all" in rules
    publish = rules[-1]
    assert publish.startswith("(+publish ")
    assert publish.endswith(")")
    assert "&whatsapp:events:company_1" in publish
    assert "&whatsapp:events:company_1" not in rules  # may publish there, not subscribe
    assert not any(c in " ".join(rules) for c in ("+keys", "+scan", "+@", "+eval", "+acl"))


def test_the_secret_s_database_urls_with_and_without_a_pooler() -> None:
    from salon_sessions.core.settings import SecretUrl
    from salon_sessions.operator.tenancy import SessionDatabase

    direct = SecretUrl("postgresql://admin:apw@db:5432/salon?sslmode=require")
    assert SessionDatabase(direct).urls("salon_r_company_1", "p/w") == {
        "database-url": "postgresql://salon_r_company_1:p%2Fw@db:5432/salon?sslmode=require"}
    pooled = SessionDatabase(direct, SecretUrl("postgresql://pgbouncer:6432/salon"))
    assert pooled.urls("salon_r_company_1", "pw") == {
        "database-url": "postgresql://salon_r_company_1:pw@pgbouncer:6432/salon",
        "lock-database-url": "postgresql://salon_r_company_1:pw@db:5432/salon?sslmode=require"}
