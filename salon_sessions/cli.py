"""The `salon-sessions` command: one entry point for every component.

Each component registers a subcommand; the image runs `salon-sessions operator`,
`salon-sessions api` or `salon-sessions worker`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[[argparse.Namespace], int]


COMMANDS: dict[str, str] = {
    "operator": "salon_sessions.operator.main",
    "api": "salon_sessions.api.cli",
    "qr": "salon_sessions.api.qr_cli",
    "migrate": "salon_sessions.db.cli",
    "redis-users": "salon_sessions.core.redis_users_cli",
    "worker": "salon_sessions.worker.main",
}
"""Subcommand -> the module whose `register` adds it. Only the module of the command being
run is imported: every session pod runs `salon-sessions worker`, and the other components'
modules (FastAPI, kopf, the Kubernetes client) would cost it ~9 MiB of memory for nothing."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or with `only` that one (when it is known)."""
    parser = argparse.ArgumentParser(prog="salon-sessions", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [only] if only in COMMANDS else list(COMMANDS)
    for name in names:
        register: Callable[[Any], None] = importlib.import_module(COMMANDS[name]).register
        register(sub)
    return parser


def _version() -> str:
    from salon_sessions import __version__

    return f"salon-sessions {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list else None
    args = build_parser(only=command).parse_args(args_list)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
