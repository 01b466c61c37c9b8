"""`/metrics`, `/healthz` and `/readyz` on one small aiohttp server.

- `/healthz`: 200 while the event loop answers (liveness).
- `/readyz`: 200 `leader` once kopf runs and the events subscription is confirmed, 200
  `standby` while waiting for the Lease (a standby is healthy and ready to take over),
  503 otherwise (starting, or the Redis subscription is down).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def make_app(registry: CollectorRegistry,
             readiness: Callable[[], tuple[bool, str]]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = readiness()
        return web.Response(text=detail + "\n", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
