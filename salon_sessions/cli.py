"""The `salon-sessions` command: one entry point for every component.

Each component registers a subcommand; the image runs `salon-sessions operator`,
`salon-sessions api` or `salon-sessions worker`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _not_built(component: str, issue: str) -> Handler:
    def run(_: argparse.Namespace) -> int:
        print(f"salon-sessions {component}: not built yet (arrives with the {issue} issue)",
              file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salon-sessions", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, issue in (
        ("operator", "run the kopf operator that reconciles SalonSessions", "operator"),
        ("api", "run the onboarding API and page", "onboarding API"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=_not_built(name, issue))
    from salon_sessions.db.cli import register as register_migrate
    from salon_sessions.worker.main import register as register_worker

    register_migrate(sub)
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
