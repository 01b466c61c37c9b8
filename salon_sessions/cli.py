"""The `salon-sessions` command: one entry point for every component.

Each component registers a subcommand; the image runs `salon-sessions operator`,
`salon-sessions api` or `salon-sessions worker`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salon-sessions", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from salon_sessions.api.cli import register as register_api
    from salon_sessions.api.qr_cli import register as register_qr
    from salon_sessions.core.redis_users_cli import register as register_redis_users
    from salon_sessions.db.cli import register as register_migrate
    from salon_sessions.operator.main import register as register_operator
    from salon_sessions.worker.main import register as register_worker

    register_operator(sub)
    register_api(sub)
    register_qr(sub)
    register_migrate(sub)
    register_redis_users(sub)
    register_worker(sub)
    return parser


def _version() -> str:
    from salon_sessions import __version__

    return f"salon-sessions {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
