"""Redis ACL users: who may touch which Redis names (the one place these rules live).

Pod-per-session isolates crashes; this isolates data. Every session's worker connects as
its own Redis user, which may only

- publish its own events, pongs and control replies (and nothing else), and subscribe to
  its own ping, control and simulator channels (and nothing else);
- read and write its own keys (state hash, latest QR, sent markers, seen keys, pacing
  state, contacts, simulator lists) and its own streams (it appends to the inbound and
  results streams and trims what every consumer group has acknowledged);
- run the few commands the worker uses: no KEYS/SCAN, FLUSH*, CONFIG, ACL, EVAL, MONITOR,
  CLIENT KILL, DEBUG, ... (`-@all`, then an allow-list).

So a compromised or buggy worker gets `NOPERM` for anything of another company, from Redis
itself. The names come from `core.channels`; a company id is `company_<digits>`, so the
glob `company_1:*` never matches `company_12:...`.

The operator and the API have their own users (`operator_rules`, `api_rules`); ACL
management needs a separate admin user (`admin_rules`), whose credentials only the
operator holds: whoever may run ACL SETUSER may grant itself anything, so that Secret is
as sensitive as Redis' own default password. Redis 7.0 (Debian 12) is enough: it has
`%R~`/`%W~` key permissions and selectors, which separate publishing from subscribing
(`_rules`).

Users created with ACL SETUSER live in Redis' memory: a Redis restart without an `aclfile`
forgets them. The operator therefore re-creates missing session users (`users`) after a
Redis gap and periodically (`operator.tenancy`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis

from salon_sessions.core import channels
from salon_sessions.core.company import canonical_company_id
from salon_sessions.core.redis_client import as_text

SESSION_USER_PREFIX: Final = "salon-session."
OPERATOR_USER: Final = "salon-operator"
API_USER: Final = "salon-api"
ADMIN_USER: Final = "salon-acl-admin"

_CONNECTION: Final = ("ping", "client|setname", "select")
"""What redis-py may send on connecting (SELECT: a URL may name a database). Its CLIENT
SETINFO (Redis 7.2+, unknown to 7.0's ACL) is refused and ignored by redis-py."""
_TRANSACTION: Final = ("multi", "exec", "discard")

WORKER_COMMANDS: Final = (
    *_CONNECTION, *_TRANSACTION, "subscribe", "unsubscribe",
    "hset", "hgetall", "expire", "get", "set", "del", "rpush", "lrange", "lpop", "llen",
    "sadd", "sismember", "watch", "unwatch",
    "xadd", "xgroup|create", "xreadgroup", "xautoclaim", "xack", "xlen", "xtrim", "xrange",
    "xinfo|groups", "xinfo|stream", "xpending",
)
OPERATOR_COMMANDS: Final = (
    *_CONNECTION, *_TRANSACTION, "psubscribe", "punsubscribe", "hgetall", "pttl", "del",
    "info",
)
API_COMMANDS: Final = (
    *_CONNECTION, *_TRANSACTION, "subscribe", "unsubscribe", "psubscribe", "punsubscribe",
    "pubsub|numsub", "hgetall", "get", "exists", "scan", "incrby", "expire", "info",
)
ADMIN_COMMANDS: Final = (*_CONNECTION, "acl|setuser", "acl|deluser", "acl|users", "acl|log")


def session_user(namespace: str, name: str) -> str:
    """The Redis user of one SalonSession's worker: `salon-session.<namespace>.<name>`.

    Per SalonSession, not per company: when a duplicate SalonSession takes a company over,
    dropping the old one's user cannot remove the new one's."""
    return f"{SESSION_USER_PREFIX}{namespace}.{name}"


def _rules(*, keys: Sequence[str] = (), read_keys: Sequence[str] = (),
           write_keys: Sequence[str] = (), subscribe: Sequence[str] = (),
           commands: Sequence[str], publish: Sequence[str] = ()) -> list[str]:
    """Root permissions (keys, subscribed channels, commands) and, for PUBLISH, a selector
    of its own: Redis 7.0 channel patterns do not tell publishing from subscribing, but a
    command runs only if the root or one selector allows it *with its channel*, so
    `(+publish &x)` lets the user publish on `x` and on nothing it may subscribe to."""
    rules = [*(f"~{k}" for k in keys), *(f"%R~{k}" for k in read_keys),
             *(f"%W~{k}" for k in write_keys), *(f"&{c}" for c in subscribe),
             "-@all", *(f"+{c}" for c in commands)]
    if publish:
        rules.append("(" + " ".join(["+publish", *(f"&{c}" for c in publish)]) + ")")
    return rules


def session_rules(company_id: str | int) -> list[str]:
    """The ACL rules (after the password) of a session's worker: its own keys and
    streams, the channels it listens to, and publishing its own events, pongs, replies."""
    company = canonical_company_id(company_id)
    return _rules(keys=channels.session_key_patterns(company),
                  subscribe=channels.session_subscribe_channels(company),
                  commands=WORKER_COMMANDS,
                  publish=channels.session_publish_channels(company))


_EVERY_SESSION_PING: Final = channels.HEALTH_PING_PREFIX + "company_*"


def operator_rules() -> list[str]:
    """The operator: every session's events and pongs (by pattern), pings, the state hashes
    (heartbeat reconciliation) and deleting a deleted session's keys. No streams."""
    return _rules(keys=(channels.SESSION_STATE_PREFIX + "*", channels.LATEST_QR_PREFIX + "*",
                        channels.LINK_WINDOW_PREFIX + "*"),
                  subscribe=(channels.EVENTS_PATTERN, channels.HEALTH_PONG_PATTERN),
                  commands=OPERATOR_COMMANDS, publish=(_EVERY_SESSION_PING,))


def api_rules() -> list[str]:
    """The onboarding API: reads state hashes and QR codes, events and pongs (by pattern),
    pings, control requests and their replies, its rate-limit counters and self-test."""
    return _rules(
        read_keys=(channels.SESSION_STATE_PREFIX + "*", channels.LATEST_QR_PREFIX + "*"),
        keys=(channels.API_PREFIX + "*",),
        subscribe=(channels.EVENTS_PATTERN, channels.HEALTH_PONG_PATTERN,
                   channels.CONTROL_REPLY_PREFIX + "*", channels.API_SELFTEST_CHANNEL),
        commands=API_COMMANDS,
        publish=(_EVERY_SESSION_PING, channels.CONTROL_PREFIX + "company_*",
                 channels.API_SELFTEST_CHANNEL))


def admin_rules() -> list[str]:
    """ACL management only: no keys, no channels."""
    return _rules(commands=ADMIN_COMMANDS)


def password_rule(password: str) -> str:
    """`#<sha256>`: Redis stores only the hash, and the clear password never crosses the
    wire (nor shows in a MONITOR or SLOWLOG)."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def setuser_args(user: str, password: str, rules: Sequence[str]) -> list[str]:
    """The whole user in one ACL SETUSER (atomic: all rules or none), from a clean slate
    (`reset`, then `resetchannels` whatever `acl-pubsub-default` says)."""
    return ["ACL", "SETUSER", user, "reset", "resetchannels", "on", password_rule(password),
            *rules]


def config_line(user: str, password: str, rules: Sequence[str]) -> str:
    """The same user as an aclfile / redis.conf `user` line."""
    return " ".join(["user", *setuser_args(user, password, rules)[2:]])


async def ensure_user(admin: Redis, user: str, password: str, rules: Sequence[str]) -> None:
    """Create or redefine `user` (idempotent). Clients of the user stay connected while the
    rules stay the same."""
    await admin.execute_command(*setuser_args(user, password, rules))  # type: ignore[no-untyped-call]


async def drop_user(admin: Redis, user: str) -> bool:
    """Delete `user` (Redis closes its connections); False when it did not exist."""
    return bool(await admin.acl_deluser(user))


async def users(admin: Redis, prefix: str = SESSION_USER_PREFIX) -> set[str]:
    """The names of the users that start with `prefix` (ACL USERS: names only, never the
    password hashes that ACL LIST would return)."""
    names = await admin.acl_users()
    decoded = (as_text(n) for n in names)
    return {n for n in decoded if n.startswith(prefix)}
