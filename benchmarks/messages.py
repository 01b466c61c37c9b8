"""The message bridge measured through real workers (simulator driver): inbound and outbound
messages per second, phone -> bot -> phone latency, backlog drain after a bot outage, and
the workers' CPU per 1,000 messages.

    .venv/bin/python -m benchmarks.messages --workers 1 --inbound 5000 --outbound 5000 \\
        --latency 1000 --drain 10000 --paced 30
    .venv/bin/python -m benchmarks.messages --workers 100 --inbound 100 --outbound 100 \\
        --latency 1000 --drain 100

Counts are per worker (except --latency: round trips in all). Starts its own PostgreSQL and
Redis (devstack), then the workers once, with `SALON_SEND_PACING=false` and
`SALON_SEND_TYPING=false` (the bridge itself); `--paced N` then starts one more worker with
the default pacing and sends it N commands at once (what a salon's bot experiences).

- inbound: N records pushed to each salon's simulated WhatsApp server queue
  (`whatsapp:simulator:inbox:<company>`) while connected, then `{"action": "deliver"}`: the
  time from the nudge to the last entry's id in the inbound streams (Redis' clock);
- outbound: N send commands per salon appended to the out streams at once: the time from the
  first `XADD` to the last record's `ts` in the simulator's sent lists;
- latency: the phone sends (`{"action": "inbound"}`) at `--rate` per second spread over the
  salons; a bot in this process reads every inbound stream with one consumer group
  (`XREADGROUP ... BLOCK`, as docs/BOT.md), appends a reply and acknowledges; the figure is
  the sent record's `ts` minus the instant before the phone's `PUBLISH` (one clock);
- drain: the bot's group exists but nobody reads while N messages per salon are stored;
  then one consumer reads all streams (`XREADGROUP COUNT 100`) and acknowledges, as fast as
  it can;
- CPU: user + system time of all the worker processes (`/proc/<pid>/stat`) over each
  throughput window, also net of the idle rate measured before; Redis' own CPU
  (`INFO cpu`) and its commands per message (`INFO commandstats`) over the same window.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks.measure import cpu_seconds, pct
from benchmarks.messages_fleet import UNPACED, Fleet, delta, redis_counters
from devstack import stack
from salon_sessions.core import channels

BOT = "bench-bot"
SENDER = "7900555{:04d}@s.whatsapp.net"


@dataclass
class Window:
    """One throughput measurement."""

    name: str
    messages: int
    seconds: float
    worker_cpu_s: float
    worker_sys_s: float
    idle_cpu_s: float
    redis_cpu_s: float
    bench_cpu_s: float
    commands: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def per_1000(self, cpu: float) -> float:
        return cpu / self.messages * 1000

    def line(self) -> str:
        per_msg = {k: round(v / self.messages, 2) for k, v in sorted(self.commands.items())
                   if v / self.messages >= 0.05}
        return (f"{self.name}: {self.messages} in {self.seconds:.2f} s = {self.rate:.0f}/s; "
                f"worker CPU {self.per_1000(self.worker_cpu_s):.2f} s per 1,000 (net of idle "
                f"{self.per_1000(self.worker_cpu_s - self.idle_cpu_s):.2f}; kernel "
                f"{self.per_1000(self.worker_sys_s):.2f}); Redis CPU "
                f"{self.per_1000(self.redis_cpu_s):.2f}, this process "
                f"{self.per_1000(self.bench_cpu_s):.2f}; Redis commands per "
                f"message {per_msg}")


class Meter:
    """CPU of the workers and Redis, and Redis' command counts, over one window."""

    def __init__(self, redis: Redis, fleet: Fleet, idle_cpu_per_s: float) -> None:
        self.redis, self.fleet, self.idle = redis, fleet, idle_cpu_per_s

    async def __aenter__(self) -> Meter:
        self.cpu0, self.sys0 = self.fleet.cpu(), self.fleet.system_cpu()
        self.own0 = cpu_seconds(os.getpid())
        self.redis0 = await redis_counters(self.redis)
        self.t0 = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.cpu = self.fleet.cpu() - self.cpu0
        self.sys = self.fleet.system_cpu() - self.sys0
        self.own = cpu_seconds(os.getpid()) - self.own0
        self.counts = delta(await redis_counters(self.redis), self.redis0)

    def window(self, name: str, messages: int, seconds: float) -> Window:
        commands = {k: v for k, v in self.counts.items() if k != "cpu"}
        return Window(name, messages, seconds, self.cpu, self.sys, self.idle * self.wall,
                      self.counts.get("cpu", 0.0), self.own, commands)


async def idle_cpu_per_s(fleet: Fleet, seconds: float = 10) -> float:
    """The linked workers' CPU per second when no message moves (heartbeats, retention)."""
    cpu0, t0 = fleet.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return (fleet.cpu() - cpu0) / (time.monotonic() - t0)


def stream_ms(entry_id: bytes | str) -> int:
    return int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])


async def reset(redis: Redis, companies: list[str]) -> None:
    """Empty the inbound and results streams and the sent lists between measurements."""
    keys = [k for c in companies for k in (channels.inbound_stream(c), channels.results_stream(c),
                                           channels.simulator_sent_key(c))]
    for i in range(0, len(keys), 300):
        await redis.delete(*keys[i:i + 300])


async def fill_inboxes(redis: Redis, companies: list[str], per: int, tag: str) -> None:
    """What WhatsApp's server holds for each salon (pushed while nobody nudges delivery)."""
    now = datetime.now(UTC).isoformat()
    for n, c in enumerate(companies):
        records = [json.dumps({"id": f"{tag}-{c}-{i:05d}", "from": SENDER.format(n % 10000),
                               "text": f"{tag} message {i}", "ts": now}) for i in range(per)]
        for i in range(0, per, 1000):
            await redis.rpush(channels.simulator_inbox_key(c), *records[i:i + 1000])


async def lengths(redis: Redis, keys: list[str], kind: str = "xlen") -> list[int]:
    pipe = redis.pipeline(transaction=False)
    for k in keys:
        pipe.xlen(k) if kind == "xlen" else pipe.llen(k)
    return [int(n) for n in await pipe.execute()]


async def wait_lengths(redis: Redis, keys: list[str], want: int, timeout: float,
                       kind: str = "xlen") -> None:
    async with asyncio.timeout(timeout):
        while min(await lengths(redis, keys, kind)) < want:
            await asyncio.sleep(0.05 if len(keys) < 10 else 0.5)  # the poll loads Redis too


async def last_entry_ms(redis: Redis, streams: list[str]) -> int:
    pipe = redis.pipeline(transaction=False)
    for s in streams:
        pipe.xrevrange(s, count=1)
    return max(stream_ms(entries[0][0]) for entries in await pipe.execute())


async def inbound_throughput(redis: Redis, fleet: Fleet, per: int, idle: float) -> Window:
    companies = fleet.companies
    await reset(redis, companies)
    await fill_inboxes(redis, companies, per, "in")
    streams = [channels.inbound_stream(c) for c in companies]
    async with Meter(redis, fleet, idle) as meter:
        t0 = time.time()
        pipe = redis.pipeline(transaction=False)
        for c in companies:
            pipe.publish(channels.simulator_channel(c), json.dumps({"action": "deliver"}))
        await pipe.execute()
        await wait_lengths(redis, streams, per, timeout=600)
    seconds = await last_entry_ms(redis, streams) / 1000 - t0
    left = sum(await lengths(redis, [channels.simulator_inbox_key(c) for c in companies],
                             "llen"))
    if left:
        raise RuntimeError(f"{left} records still in the inboxes")
    return meter.window("inbound", per * len(companies), seconds)


def send_command(company: str, key: str, to: str, text: str) -> dict[Any, Any]:
    return {"payload": json.dumps({"v": 1, "type": "send_text", "company_id": company,
                                   "idempotency_key": key, "to": to, "text": text})}


async def sent_records(redis: Redis, companies: list[str]) -> list[dict[str, Any]]:
    pipe = redis.pipeline(transaction=False)
    for c in companies:
        pipe.lrange(channels.simulator_sent_key(c), 0, -1)
    return [json.loads(r) for rows in await pipe.execute() for r in rows]


def iso_s(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def outbound_throughput(redis: Redis, fleet: Fleet, per: int, idle: float) -> Window:
    companies = fleet.companies
    await reset(redis, companies)
    tag = f"out{int(time.time())}"
    async with Meter(redis, fleet, idle) as meter:
        t0 = time.time()
        for i in range(0, per, 50):  # interleaved: every salon's commands start together
            pipe = redis.pipeline(transaction=False)
            for j in range(i, min(i + 50, per)):
                for n, c in enumerate(companies):
                    pipe.xadd(channels.outbound_stream(c), send_command(
                        c, f"{tag}:{j}", f"7900{(n * 7 + j) % 10**7:07d}", f"reply {j}"))
            await pipe.execute()
        await wait_lengths(redis, [channels.results_stream(c) for c in companies], per,
                           timeout=600)
    records = await sent_records(redis, companies)
    if len(records) != per * len(companies):
        raise RuntimeError(f"{len(records)} sends for {per * len(companies)} commands")
    seconds = max(iso_s(r["ts"]) for r in records) - t0
    return meter.window("outbound", len(records), seconds)


async def create_groups(redis: Redis, companies: list[str], group: str) -> None:
    for c in companies:
        await redis.xgroup_create(channels.inbound_stream(c), group, id="0", mkstream=True)


async def echo_bot(redis: Redis, companies: list[str], expected: int,
                   read_at: dict[str, float], stored_ms: dict[str, int],
                   out_ms: dict[str, int]) -> None:
    """docs/BOT.md's loop, minimal: read every inbound stream with the group, append one
    reply per message (derived key), acknowledge after the XADDs returned. Records when
    each message was stored (its entry id: the worker trims it once acknowledged), read
    and answered."""
    streams: dict[Any, Any] = {channels.inbound_stream(c): ">" for c in companies}
    while len(read_at) < expected:
        resp: Any = await redis.xreadgroup(BOT, "bot-0", streams, count=100, block=1000)
        now = time.time()
        for stream, entries in resp or []:
            pipe = redis.pipeline(transaction=False)
            ids = []
            for entry_id, f in entries:
                company, message_id = f[b"company_id"].decode(), f[b"message_id"].decode()
                read_at[message_id] = now
                stored_ms[message_id] = stream_ms(entry_id)
                digest = hashlib.sha256(f"{company}\0{message_id}".encode()).hexdigest()[:40]
                pipe.xadd(channels.outbound_stream(company), send_command(
                    company, f"bench:{digest}:0", f[b"sender_phone"].decode(),
                    f"echo {message_id}"))
                ids.append(entry_id)
            added = await pipe.execute()
            for (_, f), out_id in zip(entries, added, strict=True):
                out_ms[f[b"message_id"].decode()] = stream_ms(out_id)
            await redis.xack(stream, BOT, *ids)


@dataclass
class Latency:
    rounds: int
    replies: int
    total_ms: list[float]
    to_stream_ms: list[float]
    to_bot_ms: list[float]
    out_to_phone_ms: list[float]
    rate: float

    def line(self) -> str:
        def p(v: list[float]) -> str:
            return f"{pct(v, 50):.1f} / {pct(v, 99):.1f}"
        return (f"latency: {self.replies}/{self.rounds} replies at {self.rate:g}/s; phone -> "
                f"phone p50 / p99 {p(self.total_ms)} ms (max {max(self.total_ms):.1f}); "
                f"phone -> stream {p(self.to_stream_ms)}; stream -> bot {p(self.to_bot_ms)}; "
                f"out stream -> phone {p(self.out_to_phone_ms)}")


async def latency(redis: Redis, url: str, fleet: Fleet, rounds: int, rate: float) -> Latency:
    companies = fleet.companies
    await reset(redis, companies)
    await create_groups(redis, companies, BOT)
    bot_redis = Redis.from_url(url)  # the bot's own connection, as another service
    read_at: dict[str, float] = {}
    out_ms: dict[str, int] = {}
    stored: dict[str, int] = {}
    bot = asyncio.create_task(echo_bot(bot_redis, companies, rounds, read_at, stored, out_ms))
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    for i in range(rounds):
        n = i % len(companies)
        message_id = f"L{i:06d}"
        action = json.dumps({"action": "inbound", "id": message_id, "from": SENDER.format(n),
                             "text": f"hello {i}"})
        sent_at[message_id] = time.time()
        await redis.publish(channels.simulator_channel(companies[n]), action)
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    try:
        async with asyncio.timeout(60):
            while len(await sent_records(redis, companies)) < rounds:
                await asyncio.sleep(0.2)
    except TimeoutError:
        pass
    bot.cancel()
    await asyncio.gather(bot, return_exceptions=True)
    await bot_redis.aclose()
    replies = {r["text"].removeprefix("echo "): iso_s(r["ts"])
               for r in await sent_records(redis, companies)}
    total, to_stream, to_bot, to_phone = [], [], [], []
    for message_id, t0 in sent_at.items():
        if message_id not in replies:
            continue
        total.append((replies[message_id] - t0) * 1000)
        to_stream.append(stored[message_id] - t0 * 1000)
        to_bot.append(read_at[message_id] * 1000 - stored[message_id])
        to_phone.append(replies[message_id] * 1000 - out_ms[message_id])
    for c in companies:
        await redis.xgroup_destroy(channels.inbound_stream(c), BOT)
    return Latency(rounds, len(total), total, to_stream, to_bot, to_phone, rate)


@dataclass
class Drain:
    entries: int
    seconds: float
    store_s: float
    unique: int

    def line(self) -> str:
        return (f"drain: {self.entries} entries ({self.unique} distinct ids) read and "
                f"acknowledged in {self.seconds:.2f} s = {self.entries / self.seconds:.0f}/s "
                f"(storing them while the bot was down took {self.store_s:.1f} s)")


async def drain(redis: Redis, fleet: Fleet, per: int) -> Drain:
    companies = fleet.companies
    await reset(redis, companies)
    group = "drain-bot"
    await create_groups(redis, companies, group)
    await fill_inboxes(redis, companies, per, "backlog")
    streams = [channels.inbound_stream(c) for c in companies]
    t0 = time.monotonic()
    for c in companies:
        await redis.publish(channels.simulator_channel(c), json.dumps({"action": "deliver"}))
    await wait_lengths(redis, streams, per, timeout=600)
    store_s = time.monotonic() - t0
    seen: list[str] = []
    t0 = time.monotonic()
    while True:
        resp: Any = await redis.xreadgroup(group, "drainer", dict.fromkeys(streams, ">"),
                                           count=100)
        if not resp:
            break
        pipe = redis.pipeline(transaction=False)
        for stream, entries in resp:
            seen += [f[b"message_id"].decode() for _, f in entries]
            pipe.xack(stream, group, *[i for i, _ in entries])
        await pipe.execute()
    seconds = time.monotonic() - t0
    return Drain(len(seen), seconds, store_s, len(set(seen)))


@dataclass
class Paced:
    label: str
    commands: int
    sends: list[float]
    """Seconds after the first command was appended."""
    delayed: int
    typing_s: list[float]
    waited_s: float

    def line(self) -> str:
        t = sorted(self.sends)
        if len(t) < 7:
            return (f"paced ({self.label}): {len(t)}/{self.commands} sent within "
                    f"{self.waited_s:.0f} s; {self.delayed} delayed results")
        gaps = [b - a for a, b in itertools.pairwise(t)]
        tail = t[5:]
        sustained = (len(tail) - 1) / (tail[-1] - tail[0]) * 60 if len(tail) > 1 else 0.0
        return (f"paced ({self.label}): {len(t)}/{self.commands} sent; first at {t[0]:.1f} s, "
                f"5th at {t[4]:.1f} s, last at {t[-1]:.1f} s; from the 6th on "
                f"{sustained:.1f} sends/min; gaps p50 {pct(gaps, 50):.2f} s, min "
                f"{min(gaps):.2f} s, max {max(gaps):.2f} s; {self.delayed} delayed results; "
                f"typing {min(self.typing_s):.2f}-{max(self.typing_s):.2f} s")


async def paced(redis: Redis, info: stack.StackInfo, log_dir: Path, commands: int,
                label: str, env: dict[str, str], base: int, timeout: float) -> Paced:
    """One worker with the default pacing: `commands` replies appended at once, to a client
    who wrote first (a known contact: the new-contact bucket does not apply)."""
    fleet = Fleet.start(info, log_dir, 1, base, env)
    try:
        await fleet.link(redis)
        c = fleet.companies[0]
        await redis.publish(channels.simulator_channel(c), json.dumps(
            {"action": "inbound", "id": "P0", "from": SENDER.format(1), "text": "hi"}))
        await wait_lengths(redis, [channels.inbound_stream(c)], 1, timeout=30)
        t0 = time.time()
        for i in range(commands):
            await redis.xadd(channels.outbound_stream(c), send_command(
                c, f"paced:{i}", SENDER.format(1).split("@")[0], f"Your slot {i} is at 15:00"))
        deadline = time.monotonic() + timeout
        while True:
            entries: Any = await redis.xrange(channels.results_stream(c))
            results = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
            final = [f for f in results if f["status"] != "delayed"]
            if len(final) >= commands or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        reasons = Counter(f"{f['status']}:{f['reason']}" for f in results)
        print(f"paced ({label}) results: {dict(reasons)}", flush=True)
        records = await sent_records(redis, [c])
        return Paced(label, commands, [iso_s(r["ts"]) - t0 for r in records],
                     len(results) - len(final), [float(r["typing_s"] or 0) for r in records],
                     time.time() - t0)
    finally:
        fleet.stop()


async def run(args: argparse.Namespace, info: stack.StackInfo, log_dir: Path) -> None:
    redis = Redis.from_url(info.redis_url)
    fleet = Fleet.start(info, log_dir, args.workers, 920_000_000 + args.workers * 1000,
                        UNPACED)
    try:
        t0 = time.monotonic()
        link_s = await fleet.link(redis, timeout=600)
        print(f"{args.workers} workers started and linked in {time.monotonic() - t0:.1f} s "
              f"(scanning {link_s:.1f} s)", flush=True)
        idle = await idle_cpu_per_s(fleet)
        print(f"idle: {idle:.3f} CPU-s/s for all {args.workers} workers", flush=True)
        if args.inbound:
            print((await inbound_throughput(redis, fleet, args.inbound, idle)).line(),
                  flush=True)
        if args.outbound:
            print((await outbound_throughput(redis, fleet, args.outbound, idle)).line(),
                  flush=True)
        if args.latency:
            result = await latency(redis, info.redis_url, fleet, args.latency, args.rate)
            print(result.line(), flush=True)
        if args.drain:
            print((await drain(redis, fleet, args.drain)).line(), flush=True)
    finally:
        t0 = time.monotonic()
        fleet.stop()
        print(f"workers stopped in {time.monotonic() - t0:.1f} s", flush=True)
    if args.paced:
        no_jitter = {"SALON_SEND_JITTER_S": "0"}
        runs: list[tuple[str, dict[str, str], int, float]] = [("defaults", {}, 5, 30.0),
                ("defaults but jitter 0", no_jitter, args.paced, args.paced * 3.5 + 60),
                ("defaults but jitter 0, typing off", {**no_jitter, "SALON_SEND_TYPING": "false"},
                 args.paced, args.paced * 3.5 + 60)]
        for i, (label, env, commands, timeout) in enumerate(runs):
            outcome = await paced(redis, info, log_dir, commands, label, env,
                                  930_000_000 + i * 1000, timeout)
            print(outcome.line(), flush=True)
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--inbound", type=int, default=1000, help="messages per worker")
    parser.add_argument("--outbound", type=int, default=1000, help="commands per worker")
    parser.add_argument("--latency", type=int, default=1000, help="round trips in all")
    parser.add_argument("--rate", type=float, default=20, help="round trips per second")
    parser.add_argument("--drain", type=int, default=1000, help="backlog per worker")
    parser.add_argument("--paced", type=int, default=0,
                        help="commands to one worker with the default pacing (0: skip)")
    parser.add_argument("--state-dir", type=Path, help="a running stack (else its own)")
    args = parser.parse_args()
    own = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="salon-bench-")) if own else args.state_dir
    info = (stack.start(state_dir, components=["postgres", "redis"]) if own
            else stack.StackInfo.load(state_dir))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average "
          f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    try:
        stack.migrate(info)  # as the Helm hook: the workers wait for it
        asyncio.run(run(args, info, state_dir))
        print(f"load average at the end {Path('/proc/loadavg').read_text().split()[:3]}")
    finally:
        if own:
            stack.stop(state_dir)


if __name__ == "__main__":
    main()
