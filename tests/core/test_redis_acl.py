"""The per-session Redis users against the stack's real Redis: one session's credentials
can do what its worker does for its own company and nothing of another company's — Redis
itself answers NOPERM, and counts the attempt in its ACL LOG."""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import NoPermissionError

from devstack.stack import StackInfo
from salon_sessions import cli
from salon_sessions.core import channels, redis_acl, redis_users_cli
from salon_sessions.core.codec import Rejection, RejectReason, decode, encode
from salon_sessions.core.events import ConnectedData, EventSource, PongData
from salon_sessions.core.urls import with_credentials
from tests.helpers import session_redis_user
from tests.worker.harness import new_company

pytestmark = pytest.mark.slow


@pytest.fixture
def two() -> tuple[str, str]:
    return new_company(), new_company()


@pytest.fixture
def own(redis_url: str, two: tuple[str, str]) -> Iterator[redis.Redis]:
    """A client with the first company's session credentials."""
    with session_redis_user(redis_url, two[0], "acl-tests") as user:
        client = redis.Redis.from_url(user.url)
        try:
            yield client
        finally:
            client.close()


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except NoPermissionError:
        return True
    return False


def subscribe_refused(client: redis.Redis, pattern: bool, name: str) -> bool:
    pubsub = client.pubsub()
    try:
        (pubsub.psubscribe if pattern else pubsub.subscribe)(name)
        return refused(lambda: pubsub.get_message(timeout=2))
    finally:
        pubsub.close()


def test_a_session_user_does_its_own_work(own: redis.Redis, two: tuple[str, str]) -> None:
    mine = two[0]
    source = EventSource(mine, mine.replace("_", "-"))
    own.publish(channels.events_channel(mine), encode(source.event(ConnectedData())))
    own.publish(channels.health_pong_channel(mine),
                encode(source.event(PongData(correlation_id="c1"))))
    own.publish(channels.control_reply_channel(mine, "r1"), b"{}")
    with own.pipeline(transaction=True) as pipe:
        pipe.hset(channels.session_state_key(mine), mapping={"phase": "AwaitingLink"})
        pipe.expire(channels.session_state_key(mine), 30)
        pipe.execute()
    own.set(channels.latest_qr_key(mine), "2@qr", ex=20)
    assert own.get(channels.latest_qr_key(mine)) == b"2@qr"
    own.xadd(channels.inbound_stream(mine), {"v": "1"}, maxlen=100, approximate=True)
    own.xadd(channels.results_stream(mine), {"v": "1"}, maxlen=100, approximate=True)
    own.xgroup_create(channels.outbound_stream(mine), channels.OUTBOUND_GROUP, id="0",
                      mkstream=True)
    assert own.xreadgroup(channels.OUTBOUND_GROUP, "w0",
                          {channels.outbound_stream(mine): ">"}) == []
    assert own.set(channels.sent_marker_key(mine, "k1"), "sending", nx=True, ex=60)
    assert own.set(channels.inbound_seen_key(mine, "m1"), "1", nx=True, ex=60)
    own.rpush(channels.simulator_sent_key(mine), "{}")
    # retention: the worker measures and trims its own streams (docs/WORKER.md)
    assert own.xinfo_groups(channels.inbound_stream(mine)) == []
    assert own.xlen(channels.inbound_stream(mine)) == 1
    assert own.xtrim(channels.results_stream(mine), minid="0-1") == 0
    own.hset(channels.send_pace_key(mine), "tat", "0")
    own.sadd(channels.contacts_key(mine), "79001234567")
    for channel in (channels.health_ping_channel(mine), channels.control_channel(mine),
                    channels.simulator_channel(mine)):
        assert not subscribe_refused(own, False, channel)


def test_a_session_user_cannot_touch_another_company(redis_url: str, own: redis.Redis,
                                                    two: tuple[str, str]) -> None:
    mine, other = two
    root = redis.Redis.from_url(redis_url)
    root.hset(channels.session_state_key(other), "phase", "Connected")
    root.set(channels.latest_qr_key(other), "2@their-qr", ex=60)
    root.execute_command("ACL", "LOG", "RESET")
    forged = EventSource(other, other.replace("_", "-"))
    event = encode(forged.event(ConnectedData()))
    pong = encode(forged.event(PongData(correlation_id="x")))
    attempts: dict[str, Callable[[], Any]] = {
        "publish an event": lambda: own.publish(channels.events_channel(other), event),
        "publish a pong": lambda: own.publish(channels.health_pong_channel(other), pong),
        "answer its control": lambda: own.publish(
            channels.control_reply_channel(other, "r1"), b"{}"),
        "ping it": lambda: own.publish(channels.health_ping_channel(other), b"{}"),
        "write its state hash": lambda: own.hset(channels.session_state_key(other),
                                                 "phase", "Failed"),
        "read its state hash": lambda: own.hgetall(channels.session_state_key(other)),
        "read its QR": lambda: own.get(channels.latest_qr_key(other)),
        "delete its QR": lambda: own.delete(channels.latest_qr_key(other)),
        "append to its inbound stream": lambda: own.xadd(channels.inbound_stream(other),
                                                         {"v": "1"}),
        "append to its results stream": lambda: own.xadd(channels.results_stream(other),
                                                         {"v": "1"}),
        "read its outbound stream": lambda: own.xrange(channels.outbound_stream(other)),
        "mark its command sent": lambda: own.set(channels.sent_marker_key(other, "k"), "x"),
        "read its inbound stream": lambda: own.xrange(channels.inbound_stream(other)),
        "trim its inbound stream": lambda: own.xtrim(channels.inbound_stream(other), 0),
        "read its pacing state": lambda: own.hgetall(channels.send_pace_key(other)),
        "read its contacts": lambda: own.sismember(channels.contacts_key(other), "7"),
        "list keys": lambda: own.keys("*"),
        "scan keys": lambda: own.scan(0),
        "flush": lambda: own.flushall(),
        "read the config": lambda: own.config_get("*"),
        "list users": lambda: own.acl_list(),
        "create a user": lambda: own.acl_setuser("x", enabled=True, nopass=True),
        "run a script": lambda: own.eval("return 1", 0),
        "list clients": lambda: own.client_list(),
        "list channels": lambda: own.pubsub_channels(),
    }
    allowed = [what for what, call in attempts.items() if not refused(call)]
    assert allowed == []
    for pattern, name in ((False, channels.control_channel(other)),
                          (False, channels.health_ping_channel(other)),
                          (False, channels.events_channel(other)),
                          (True, channels.EVENTS_PATTERN)):
        assert subscribe_refused(own, pattern, name), name
    # untouched, and Redis counted every attempt against this user
    assert root.hget(channels.session_state_key(other), "phase") == b"Connected"
    user = redis_acl.session_user("acl-tests", mine.replace("_", "-"))
    counted = sum(int(e["count"]) for e in root.acl_log(count=128) if e["username"] == user)
    assert counted >= len(attempts) + 4
    root.close()


def test_the_operator_and_api_users_have_what_they_need_and_no_more(
        stack: StackInfo, two: tuple[str, str]) -> None:
    company = two[0]
    operator = redis.Redis.from_url(stack.redis_operator_url)
    api = redis.Redis.from_url(stack.redis_api_url)
    admin = redis.Redis.from_url(stack.redis_admin_url)
    try:
        for client in (operator, api):
            assert not subscribe_refused(client, True, channels.EVENTS_PATTERN)
            assert not subscribe_refused(client, True, channels.HEALTH_PONG_PATTERN)
            client.publish(channels.health_ping_channel(company), b"{}")
            client.hgetall(channels.session_state_key(company))
            stream = channels.inbound_stream(company)
            assert refused(lambda: client.xadd(stream, {"v": "1"}))  # noqa: B023
            assert refused(lambda: client.keys("*"))  # noqa: B023
            assert refused(lambda: client.acl_setuser("x"))  # noqa: B023
            # publishing is separate from subscribing: no forged events or pongs
            for channel in (channels.events_channel(company),
                            channels.health_pong_channel(company)):
                assert refused(lambda: client.publish(channel, b"{}"))  # noqa: B023
        operator.delete(*channels.session_keys(company))
        api.publish(channels.control_channel(company), b"{}")
        assert not subscribe_refused(api, False, channels.control_reply_channel(company, "r"))
        assert api.get(channels.latest_qr_key(company)) is None
        assert refused(lambda: api.set(channels.latest_qr_key(company), "x"))  # read only
        assert refused(lambda: admin.get(channels.latest_qr_key(company)))
        assert refused(lambda: admin.publish(channels.events_channel(company), b"{}"))
        assert redis_acl.ADMIN_USER in admin.acl_users()
    finally:
        for client in (operator, api, admin):
            client.close()


def test_a_payload_on_another_company_s_channel_is_refused() -> None:
    a, b = new_company(), new_company()
    event = EventSource(b, b.replace("_", "-")).event(ConnectedData())
    raw = encode(event)
    assert decode(raw, channel=channels.events_channel(b)) == event
    for channel in (channels.events_channel(a), channels.health_pong_channel(a),
                    channels.EVENTS_PREFIX + b.removeprefix("company_"),
                    channels.EVENTS_PREFIX):
        result = decode(raw, channel=channel)
        assert isinstance(result, Rejection), channel
        assert result.reason is RejectReason.WRONG_COMPANY
        assert b not in result.detail
    assert decode(raw) == event  # no channel, no check
    assert json.loads(raw)["company_id"] == b


def test_redis_users_prints_commands_redis_accepts(redis_url: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    passwords = {var: f"pw-{var.lower()}-0123456789"
                 for var, _ in redis_users_cli.USERS.values()}
    for var, value in passwords.items():
        monkeypatch.setenv(var, value)
    assert cli.main(["redis-users"]) == 0
    out = capsys.readouterr().out
    assert not any(p in out for p in passwords.values())  # only their hashes
    root = redis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]  # other names: the stack's own users stay as they are
    try:
        for line in out.splitlines():
            args = shlex.split(line)
            assert args[:2] == ["ACL", "SETUSER"]
            args[2] = f"{tag}-{args[2]}"
            assert root.execute_command(*args) in (b"OK", "OK")
        user, (var, _) = next(iter(redis_users_cli.USERS.items()))
        url = with_credentials(redis_url, f"{tag}-{user}", passwords[var])
        as_user = redis.Redis.from_url(url)
        assert as_user.ping()
        as_user.close()
    finally:
        for user in redis_users_cli.USERS:
            root.acl_deluser(f"{tag}-{user}")
        root.close()
    monkeypatch.delenv(var)
    assert cli.main(["redis-users", "--aclfile"]) == 2
