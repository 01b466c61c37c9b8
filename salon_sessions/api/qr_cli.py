"""`salon-sessions qr <company>`: print the session's current QR in the terminal.

For operators who link a salon with `kubectl apply` instead of the onboarding page. It
reads the latest QR the worker published (Redis); `--watch` keeps printing each new QR
as WhatsApp rotates it and exits when the session connects.

Exit codes: 0 printed (or, with --watch, connected), 1 Redis unavailable, 2 configuration
error, 3 already linked, 4 no QR yet (the worker is not running or has not published one),
5 --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.api import live
from salon_sessions.api.qr import terminal
from salon_sessions.core import channels
from salon_sessions.core.bounds import Horizon
from salon_sessions.core.codec import Rejection, decode
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id
from salon_sessions.core.events import ConnectedEvent, LinkedEvent, QrEvent, event_ahead
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.settings import QrSettings, load_settings

EXIT_LINKED, EXIT_NO_QR, EXIT_TIMEOUT = 3, 4, 5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("qr", help="print a session's current QR code in the terminal",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("company", help="company id (company_962302 or 962302)")
    p.add_argument("--watch", action="store_true",
                   help="print every new QR until the session connects")
    p.add_argument("--ansi", action="store_true",
                   help="draw with ANSI colours (two characters per module) instead of "
                   "half blocks")
    p.add_argument("--timeout", type=float, default=None,
                   help="with --watch: give up after this many seconds")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        company = canonical_company_id(args.company)
    except InvalidCompanyId as exc:
        print(f"salon-sessions qr: {exc.why}", file=sys.stderr)
        return 2
    settings = load_settings(QrSettings, "qr")
    if settings is None:
        return 2
    redis = connect_redis(settings.redis_url, client_name="salon-qr-cli")
    return asyncio.run(_main(redis, company, args, sys.stdout, sys.stderr))


async def _main(redis: Redis, company: str, args: argparse.Namespace, out: TextIO,
                err: TextIO) -> int:
    try:
        if args.watch:
            coro = _watch(redis, company, not args.ansi, out, err)
            try:
                return await asyncio.wait_for(coro, args.timeout)
            except TimeoutError:
                print(f"no connection within {args.timeout:g}s", file=err)
                return EXIT_TIMEOUT
        return await _once(redis, company, not args.ansi, out, err)
    except live.RedisUnavailable as exc:
        print(f"salon-sessions qr: {exc}", file=err)
        return 1
    except (RedisError, OSError) as exc:  # the --watch subscription
        print(f"salon-sessions qr: Redis is unavailable ({type(exc).__name__})", file=err)
        return 1
    finally:
        await redis.aclose()


async def _once(redis: Redis, company: str, compact: bool, out: TextIO, err: TextIO) -> int:
    state = await live.read_state(redis, company)
    if state is not None and state.linked:
        print(f"{company} is already linked" + (f" ({state.phone})" if state.phone else ""),
              file=err)
        return EXIT_LINKED
    payload = await live.read_qr(redis, company)
    if payload is None:
        print(f"no QR for {company} yet: is its worker running? (try --watch)", file=err)
        return EXIT_NO_QR
    _show(payload, company, compact, out, err)
    return 0


def _show(payload: str, company: str, compact: bool, out: TextIO, err: TextIO) -> None:
    print(f"WhatsApp QR for {company}: on the phone open Settings > Linked devices > "
          f"Link a device and scan it. It rotates; use --watch to follow.", file=err)
    out.write(terminal(payload, compact=compact))
    out.flush()


async def _watch(redis: Redis, company: str, compact: bool, out: TextIO, err: TextIO) -> int:
    pubsub = redis.pubsub()
    channel = channels.events_channel(company)
    await pubsub.subscribe(channel)
    try:
        first = await _once(redis, company, compact, out, err)
        if first == EXIT_LINKED:
            state = await live.read_state(redis, company)
            if state is not None and state.connected:
                return 0
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            event = decode(message["data"], channel=channel)
            if isinstance(event, Rejection) or event_ahead(event, Horizon()):
                continue  # refused by the decoder, or beyond the horizon (core.bounds)
            if isinstance(event, QrEvent):
                if out.isatty():
                    out.write("\x1b[2J\x1b[H")
                _show(event.data.code, company, compact, out, err)
            elif isinstance(event, LinkedEvent):
                print(f"{company}: linked, connecting...", file=err)
            elif isinstance(event, ConnectedEvent):
                print(f"{company}: connected", file=err)
                return 0
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
