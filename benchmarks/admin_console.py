"""The admin console with N salons, in Chromium (Debian's, through Playwright).

    .venv/bin/python -m benchmarks.admin_console --sessions 1000
    .venv/bin/python -m benchmarks.admin_console --sessions 1000 --state-dir .stack

On a local stack without a node (PostgreSQL, Redis, etcd, kube-apiserver; or the running
stack of `--state-dir`, in a namespace of its own), no operator and no workers:

1. N SalonSessions created through the Kubernetes API (32 in flight), one API process for
   the namespace (`salon-sessions api`);
2. time to first render: the console reloaded `--loads` times with the admin token in the
   tab's session storage; from navigation start to the first rendering of the snapshot of
   all N rows (the page's own `performance.now()`), and the snapshot's size;
3. time for an update to show, both ways a row changes: a worker's state hash written and
   its event published on Redis, and a SalonSession's `.status` patched (as the operator
   does), each `--updates` times on a salon of the page shown; from the write (this
   process's clock) to the row's new text in the DOM (a MutationObserver's `Date.now()`);
   one change at a time, 0.5 s apart, so the feed sends each at once (a change within
   0.2 s of the previous flush waits for the rest of those 0.2 s);
4. a burst: every salon's hash written and an event published at once; the time until the
   page shows all N connected, and how many `changes` messages it took;
5. the page's JavaScript heap (CDP `Performance.getMetrics`) after the snapshot and after
   the burst, and the API process's RSS.

Prints a JSON report and a Markdown table row for docs/BENCHMARKS.md. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from playwright.async_api import Page, async_playwright
from websockets.asyncio.client import connect

from benchmarks.api_common import pct, rss_mib, start_api
from benchmarks.operator_scale import GROUP_PATH, REPO, Api
from devstack import stack as devstack
from salon_sessions.core.channels import events_channel, session_state_key
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ConnectedData, EventSource
from tests.api.browser import CHROMIUM, CHROMIUM_ARGS

CRD = REPO / "crds" / "salonsessions.wa.salonsessions.io.yaml"
BASE = 500_000_000


def company(i: int) -> str:
    return f"company_{BASE + i}"


async def create_all(api: Api, ns: str, n: int) -> float:
    started = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        c = company(i)
        body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
                "metadata": {"name": c.replace("_", "-")},
                "spec": {"companyId": c, "displayName": f"Salon {i}", "driver": "simulator",
                         "link": {"method": "qr"}}}
        async with sem:
            await api.post(f"{GROUP_PATH}/namespaces/{ns}/salonsessions", body)

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


async def patch_status(api: Api, ns: str, c: str, status: dict[str, Any]) -> None:
    url = f"{api.server}{GROUP_PATH}/namespaces/{ns}/salonsessions/{c.replace('_', '-')}/status"
    async with api.session.patch(url, json={"status": status},
                                 headers={"Content-Type": "application/merge-patch+json"}) as r:
        if r.status >= 300:
            raise RuntimeError(f"{r.status}: {await r.text()}")


async def heap_mib(page: Page) -> float:
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    await cdp.detach()
    return round(float(metrics["JSHeapUsedSize"]) / 2**20, 1)


async def until(page: Page, expression: str, timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while not await page.evaluate(expression):
            await asyncio.sleep(0.01)


WATCH_ROW = """([company, text]) => {
  window.__seenAt = null;
  const check = () => {
    const td = document.querySelector(`tr[data-company="${company}"] td.phase-col`);
    if (td && td.textContent === text && window.__seenAt === null) window.__seenAt = Date.now();
  };
  new MutationObserver(check).observe(document.getElementById('sessions'),
                                      {childList: true, subtree: true});
}"""


async def update_latency(page: Page, write: Any, companies: list[str], phase: str) -> list[float]:
    """ms from `write(company)` to the row showing `phase`, for each company."""
    out = []
    for c in companies:
        await asyncio.sleep(0.5)  # a lone change: the feed's previous flush is long past
        await page.evaluate(WATCH_ROW, [c, phase])
        t0 = time.time() * 1000
        await write(c)
        await until(page, "window.__seenAt !== null", 30)
        out.append(await page.evaluate("window.__seenAt") - t0)
    return out


async def measure(info: devstack.StackInfo, n: int, loads: int, updates: int,
                  tmp: Path) -> dict[str, Any]:
    ns = f"admin-bench-{uuid.uuid4().hex[:6]}"
    info.kubectl("apply", "-f", str(CRD))
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/salonsessions.wa.salonsessions.io")
    info.kubectl("create", "namespace", ns)
    kube = Api(info)
    redis = aioredis.Redis.from_url(info.redis_url)
    proc = start_api(info, tmp / "api.log", SALON_KUBECONFIG=info.kubeconfig,
                     SALON_NAMESPACE=ns)
    report: dict[str, Any] = {"sessions": n}
    try:
        report["create_s"] = round(await create_all(kube, ns, n), 2)
        ws_url = proc.base_url.replace("http", "ws") + "/v1/admin/ws"
        offered = ["salon.v1", f"bearer.{proc.admin_token}"]
        while True:  # the watch may still be delivering the last creations
            async with connect(ws_url, max_size=2**26, subprotocols=offered) as ws:  # type: ignore[arg-type]
                snap = await ws.recv()
            if len(json.loads(snap)["sessions"]) >= n:
                break
            await asyncio.sleep(0.5)
        report["snapshot_kib"] = round(len(snap) / 1024, 1)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            page = await (await browser.new_context(viewport={"width": 1280, "height": 800})
                          ).new_page()
            await page.goto(f"{proc.base_url}/admin?lang=en")
            await page.evaluate("t => sessionStorage.setItem('salon.admin.token', t)",
                                proc.admin_token)
            firsts = []
            for _ in range(loads):
                await page.reload()
                await until(page, f"window.__admin && window.__admin.rows.size === {n} && "
                                  "window.__admin.renders > 0 && "
                                  "document.querySelectorAll('#rows tr').length === 50")
                firsts.append(await page.evaluate("window.__admin.firstRenderMs"))
            report["first_render_ms"] = {"median": round(statistics.median(firsts)),
                                         "max": round(max(firsts)), "loads": loads}
            report["heap_mib_snapshot"] = await heap_mib(page)

            visible = await page.evaluate(
                "[...document.querySelectorAll('#rows tr')].map(r => r.dataset.company)")
            targets = visible[:updates]

            async def via_redis(c: str) -> None:
                source = EventSource(c, c.replace("_", "-"))
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.hset(session_state_key(c), mapping={
                        "phase": "AwaitingLink", "linked": "false", "connected": "false",
                        "seq": "1"})
                    pipe.expire(session_state_key(c), 600)
                    pipe.publish(events_channel(c), encode(source.event(
                        ConnectedData())))
                    await pipe.execute()

            async def via_status(c: str) -> None:
                await redis.delete(session_state_key(c))  # the operator's status shows
                await patch_status(kube, ns, c, {"phase": "LoggedOut", "linked": False,
                                                 "connected": False})

            redis_ms = await update_latency(page, via_redis, targets, "AwaitingLink")
            status_ms = await update_latency(page, via_status, targets, "LoggedOut")
            report["update_ms"] = {
                "redis_event": {"median": round(statistics.median(redis_ms)),
                                "p95": round(pct(redis_ms, 95)), "n": len(redis_ms)},
                "status_patch": {"median": round(statistics.median(status_ms)),
                                 "p95": round(pct(status_ms, 95)), "n": len(status_ms)}}

            changes_before = await page.evaluate(
                "window.__admin.trace.filter(e => e.startsWith('changes:')).length")
            t0 = time.perf_counter()
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(n):
                    c = company(i)
                    pipe.hset(session_state_key(c), mapping={
                        "phase": "Connected", "linked": "true", "connected": "true",
                        "phone": f"7968{i:07d}", "seq": "9"})
                    pipe.expire(session_state_key(c), 600)
                    pipe.publish(events_channel(c), encode(EventSource(
                        c, c.replace("_", "-")).event(ConnectedData())))
                await pipe.execute()
            await until(page, "[...window.__admin.rows.values()].filter(r => r.connected)"
                              f".length === {n}")
            report["burst"] = {
                "all_shown_ms": round((time.perf_counter() - t0) * 1000),
                "changes_messages": await page.evaluate(
                    "window.__admin.trace.filter(e => e.startsWith('changes:')).length")
                - changes_before}
            report["heap_mib_after_burst"] = await heap_mib(page)
            report["api_rss_mib"] = round(rss_mib(proc.pid), 1)
            await browser.close()
    finally:
        proc.stop()
        await kube.close()
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.delete(session_state_key(company(i)))
            await pipe.execute()
        await redis.aclose()
        info.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--state-dir", help="a running stack with Kubernetes (else one is started)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="salon-bench-admin-"))
    tmp.chmod(0o755)  # PostgreSQL runs as its own user under the stack dir
    if args.state_dir:
        info = devstack.StackInfo.load(Path(args.state_dir))
        report = asyncio.run(measure(info, args.sessions, args.loads, args.updates, tmp))
    else:
        state = tmp / "stack"
        info = devstack.start(state, components=("postgres", "redis", "kubernetes"))
        try:
            report = asyncio.run(measure(info, args.sessions, args.loads, args.updates, tmp))
        finally:
            devstack.stop(state)
    print(json.dumps(report, indent=2))
    u = report["update_ms"]
    print(f"| {report['sessions']} | {report['first_render_ms']['median']} "
          f"(max {report['first_render_ms']['max']}) | {report['snapshot_kib']} | "
          f"{u['redis_event']['median']} / {u['redis_event']['p95']} | "
          f"{u['status_patch']['median']} / {u['status_patch']['p95']} | "
          f"{report['burst']['all_shown_ms']} ({report['burst']['changes_messages']} messages) | "
          f"{report['heap_mib_snapshot']} → {report['heap_mib_after_burst']} | "
          f"{report['api_rss_mib']} |")


if __name__ == "__main__":
    main()
