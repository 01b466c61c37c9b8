"""A Redis of a test's own, next to the stack's: to show what the project does with a Redis
configured the way it warns about (`appendonly no`), without touching the shared one."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.procs import free_port, spawn, stop_named, wait_until
from devstack.stack import redis_config
from salon_sessions.core import redis_acl

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ScratchRedis:
    url: str
    """The default user (everything)."""
    operator_url: str
    api_url: str


@contextmanager
def scratch_redis(tmp: Path, *, appendonly: bool) -> Iterator[ScratchRedis]:
    """redis-server on a free port of 127.0.0.1 with the stack's configuration
    (`devstack.stack.redis_config`) but `appendonly` as asked, and the operator's and the
    API's users of `core.redis_acl`; stopped (by its pid) afterwards."""
    data = tmp / "redis"
    data.mkdir(parents=True)
    port = free_port()
    passwords = {name: secrets.token_urlsafe(18)
                 for name in ("default", redis_acl.OPERATOR_USER, redis_acl.API_USER)}
    users = [redis_acl.config_line("default", passwords["default"], ["~*", "&*", "+@all"]),
             redis_acl.config_line(redis_acl.OPERATOR_USER, passwords[redis_acl.OPERATOR_USER],
                                   redis_acl.operator_rules()),
             redis_acl.config_line(redis_acl.API_USER, passwords[redis_acl.API_USER],
                                   redis_acl.api_rules())]
    conf = data / "redis.conf"
    conf.write_text(redis_config(port, HOST, data, users, appendonly=appendonly))
    conf.chmod(0o600)
    name = f"redis-scratch-{port}"
    proc = spawn(tmp, name, ["redis-server", str(conf)])

    def url(user: str) -> str:
        who = "" if user == "default" else user
        return f"redis://{who}:{passwords[user]}@{HOST}:{port}/0"

    try:
        def pong() -> bool:
            with redis.Redis.from_url(url("default")) as r:
                return bool(r.ping())

        wait_until("a scratch Redis", pong, 20, proc, tmp / "logs" / f"{name}.log")
        yield ScratchRedis(url("default"), url(redis_acl.OPERATOR_USER),
                           url(redis_acl.API_USER))
    finally:
        stop_named(tmp, [name])
