"""`salon-sessions redis-users`: the Redis users of the operator, the API and the ACL admin,
as `ACL SETUSER` commands (for `redis-cli`) or aclfile lines, from `core.redis_acl`.

A platform engineer creates these three once per Redis (the session workers' users are the
operator's to create). The passwords come from the environment and are printed only as
their SHA-256 (`#...`): put the same passwords in the URLs of the chart's Secrets.

    SALON_REDIS_OPERATOR_PASSWORD=... SALON_REDIS_API_PASSWORD=... \\
    SALON_REDIS_ADMIN_PASSWORD=... salon-sessions redis-users | redis-cli -u "$ROOT_URL"
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable

from salon_sessions.core import redis_acl

USERS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    redis_acl.OPERATOR_USER: ("SALON_REDIS_OPERATOR_PASSWORD", redis_acl.operator_rules),
    redis_acl.API_USER: ("SALON_REDIS_API_PASSWORD", redis_acl.api_rules),
    redis_acl.ADMIN_USER: ("SALON_REDIS_ADMIN_PASSWORD", redis_acl.admin_rules),
}
MIN_PASSWORD = 16


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("redis-users", help="print the Redis ACL users of operator, API and "
                       "ACL admin", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aclfile", action="store_true",
                   help="aclfile / redis.conf `user` lines instead of ACL SETUSER commands")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    lines = []
    for user, (variable, rules) in USERS.items():
        password = os.environ.get(variable, "")
        if len(password) < MIN_PASSWORD:
            print(f"salon-sessions redis-users: set {variable} (at least {MIN_PASSWORD} "
                  f"characters)", file=sys.stderr)
            return 2
        if args.aclfile:
            lines.append(redis_acl.config_line(user, password, rules()))
        else:
            lines.append(shlex.join(redis_acl.setuser_args(user, password, rules())))
    print("\n".join(lines))
    return 0
