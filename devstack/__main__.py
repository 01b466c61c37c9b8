"""`python -m devstack up|down|status|phone|images` — the local stack of real components.

up      install nothing (scripts/bootstrap.sh does that), start every component (the
        control plane and a real node), `helm install` the chart with its default values,
        create the demo salon through the API, print what to open and type.
down    stop everything `up` started, by pid (the node's containers too), and put back what
        the node changed on the host (iptables, ipsets, sysctls, mounts, cgroups, links).
status  show which components run.
phone   play the demo salon's phone (simulator driver): scan, code XXXX-XXXX, disconnect,
        logout.
images  build the node's images that are missing (pause, CoreDNS, the Python base, the
        project's from its Dockerfile) and list them with their archives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack import chart, stack
from devstack.procs import StartError, http_ok, pid_alive, pid_dir, wait_until

DEFAULT_STATE = stack.REPO / ".stack"


def cmd_up(state_dir: Path) -> int:
    print(f"[demo] starting the local stack in {state_dir} ...", flush=True)
    try:
        info = stack.start(state_dir)
    except StartError as exc:
        print(f"[demo] FAILED: {exc}", file=sys.stderr)
        return 1
    kc = info.kubeconfig
    print(f"[demo] PostgreSQL  {redact(info.postgres_dsn)}")
    print(f"[demo] Redis       {redact(info.redis_url)}")
    print(f"[demo] Kubernetes  {info.kube_server} (node {info.node_name} Ready: containerd, "
          f"kubelet, kube-proxy, CoreDNS, kube-router)")
    print(f"[demo] worker image {info.worker_image} (built from the Dockerfile)")
    print(f"[demo] kubeconfig  {kc}")
    print(f"[demo]   export KUBECONFIG={kc}")
    print(f"[demo]   kubectl get nodes      (kubectl: {info.bin_dir}/kubectl)")
    print(f"[demo] secrets (database and Redis URLs with passwords) are in {state_dir}/state.json")
    print(f"[demo] helm install {chart.RELEASE} charts/salon-sessions -n {DEMO_NAMESPACE} "
          f"(default values) ...", flush=True)
    try:
        install_demo(info)
        info.save()
        link = create_demo_salon(info)
    except (StartError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"[demo] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"[demo] the chart runs: 2 operator replicas (one leader), the API (2 replicas), "
          f"NetworkPolicies, PDBs; demo salon {DEMO_COMPANY} created, its worker runs in a "
          f"container of {info.worker_image}")
    print("[demo] driver: simulator (api.defaultDriver=simulator: there is no WhatsApp "
          "network here; `phone scan` plays the phone)")
    print(f"[demo] onboarding page:  {link}")
    print(f"[demo] admin console:    {info.api_url}/admin   (every salon live; it asks once "
          f"for the admin token: .venv/bin/python -m devstack admin-token)")
    print(f"[demo] API docs:         {info.api_url}/docs")
    print(f"[demo]   (the API Service {API_SERVICE} is a NodePort: {DEMO_NODE_PORT} on the "
          f"node address {node_host(info)}, reachable from this machine)")
    print(f"[demo] watch it:         {info.bin_dir}/kubectl --kubeconfig {kc} "
          f"-n {DEMO_NAMESPACE} get salonsessions,pods -w")
    print(f"[demo] terminal QR:      make qr        (salon-sessions qr {DEMO_COMPANY})")
    print("[demo] play the phone:   .venv/bin/python -m devstack phone scan        "
          "(link with the QR on screen)")
    print("                         .venv/bin/python -m devstack phone code ABCD-1234   "
          "(enter a pairing code)")
    more = ("disconnect | logout [406|403]", "passkey [confirmation|ABCD-1234]",
            "ban [101] | refuse 503 | replaced")
    for line in more:
        print(f"                         .venv/bin/python -m devstack phone {line}")
    print("                         .venv/bin/python -m devstack phone say \"Hello!\"   "
          "(a client writes to the salon; limit 429|463: WhatsApp refuses sends)")
    print("[demo] a bot:            .venv/bin/python examples/echo_bot.py --redis-url <bot "
          "user URL> company_1001   (docs/BOT.md)")
    print("[demo] stop everything:  make down")
    return 0


DEMO_NAMESPACE = "salon-sessions"
DEMO_COMPANY = "company_1001"
DEMO_NODE_PORT = 30080
API_SERVICE = f"{chart.RELEASE}-api"


def node_host(info: stack.StackInfo) -> str:
    """The node's address (where the NodePort listens): the host of the stack's URLs."""
    return urlsplit(info.kube_server).hostname or "127.0.0.1"


def install_demo(info: stack.StackInfo) -> None:
    """`helm install` of the chart with its default values and the demo's few: the local
    image, the simulator as default driver, the API Service as a NodePort."""
    chart.create_namespace(info, DEMO_NAMESPACE)
    stack.backing_services(info, DEMO_NAMESPACE)
    creds = chart.create_secrets(info, DEMO_NAMESPACE, info.postgres_dsn)
    values = chart.merge(chart.image_values(info.worker_image), {
        "api": {"defaultDriver": "simulator",
                "service": {"type": "NodePort", "nodePort": DEMO_NODE_PORT}}})
    chart.install(info, DEMO_NAMESPACE, values)
    info.api_url = f"http://{node_host(info)}:{DEMO_NODE_PORT}"
    info.api_admin_token = creds.admin_token
    wait_until("the onboarding API through its NodePort",
               lambda: http_ok(f"{info.api_url}/readyz", timeout=3), 60)


def _api(info: stack.StackInfo, method: str, path: str, body: object = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{info.api_url}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {info.api_admin_token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, Any] = json.loads(resp.read() or b"{}")
        return result


def create_demo_salon(info: stack.StackInfo) -> str:
    """Create the demo salon through the API, as a platform would; return its onboarding link."""
    _api(info, "POST", "/v1/sessions", {"company_id": DEMO_COMPANY,
                                        "display_name": "Demo salon", "driver": "simulator"})
    token = _api(info, "POST", f"/v1/sessions/{DEMO_COMPANY}/tokens", {"ttl_s": 7 * 24 * 3600})

    def phase() -> str:
        out = info.kubectl("get", "salonsession", DEMO_COMPANY.replace("_", "-"),
                           "-n", DEMO_NAMESPACE, "-o", "jsonpath={.status.phase}")
        return out.stdout.strip()

    # the worker's container is up and shows a QR: `phone scan` works from now on
    wait_until("the demo salon's worker to show a QR", lambda: phase() == "AwaitingLink", 180)
    return str(token["onboarding_url"])


CLIENT_PHONE = "79005550001"
"""The demo's client, who writes to the salon (`phone say`)."""


def cmd_phone(state_dir: Path, kind: str, code: str | None, company: str, phone: str) -> int:
    """Play the demo salon's phone against the simulator driver."""
    import asyncio

    from redis.asyncio import Redis

    from salon_sessions.core import channels

    if kind == "code" and not code:
        print("phone code: give the pairing code shown on the page", file=sys.stderr)
        return 2
    info = stack.StackInfo.load(state_dir)

    async def run() -> int:
        redis = Redis.from_url(info.redis_url)
        try:
            if kind == "scan":
                qr = await redis.get(channels.latest_qr_key(company))
                if qr is None:
                    print(f"no QR on screen for {company} (linked already, or not started)")
                    return 1
                text = qr.decode() if isinstance(qr, bytes) else str(qr)
                msg: dict[str, str] = {"action": "scan", "qr": text, "phone": phone}
            elif kind == "code":
                msg = {"action": "enter_code", "code": str(code)}
            elif kind == "say":  # a client of the salon writes to it
                msg = {"action": "inbound", "from": f"{CLIENT_PHONE}@s.whatsapp.net",
                       "text": code or "Hello! Is there a slot for a haircut tomorrow?"}
            else:
                msg = phone_action(kind, code)
            heard = await redis.publish(channels.simulator_channel(company), json.dumps(msg))
            print(f"phone: {kind} sent to {company} ({heard} simulator listening)")
            return 0 if heard else 1
        finally:
            await redis.aclose()

    return asyncio.run(run())


def phone_action(kind: str, arg: str | None) -> dict[str, str]:
    """`passkey [request|confirmation|XXXX-XXXX]`, `logout|ban|refuse [WhatsApp's code]`,
    `replaced`, `disconnect` as the simulator's action (`worker/simulator/driver.py`)."""
    if kind == "passkey":
        if arg in (None, "request", "confirmation"):
            return {"action": "passkey", "stage": arg or "request"}
        return {"action": "passkey", "stage": "confirmation", "code": str(arg)}
    action = {"ban": "temporary_ban", "refuse": "connect_failure",
              "replaced": "stream_replaced", "limit": "send_limit"}.get(kind, kind)
    msg = {"action": action}
    if arg is not None and action in ("logout", "temporary_ban", "connect_failure",
                                      "send_limit"):
        msg["code"] = arg
    return msg


def redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def cmd_down(state_dir: Path) -> int:
    stopped = stack.stop(state_dir)
    print(f"[down] stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def cmd_images() -> int:
    from devstack import images

    try:
        built = images.ensure_images()
    except (RuntimeError, StartError) as exc:
        print(f"[images] FAILED: {exc}", file=sys.stderr)
        return 1
    for image in (built.pause, built.coredns, built.base, built.project):
        size = image.archive.stat().st_size / 2**20
        print(f"{image.tag:45} {size:6.0f} MiB  {'cached' if image.cached else 'built '}  "
              f"{image.archive}")
    return 0


def cmd_status(state_dir: Path) -> int:
    running = 0
    for f in sorted(pid_dir(state_dir).glob("*.pid")):
        pid = int(f.read_text().strip())
        alive = pid_alive(pid)
        running += alive
        print(f"{f.stem:25} pid {pid:<8} {'running' if alive else 'gone'}")
    if (state_dir / "state.json").exists():
        info = json.loads((state_dir / "state.json").read_text())
        print(f"kubeconfig: {info['kubeconfig']}")
    return 0 if running else 3


def cmd_admin_token(state_dir: Path) -> int:
    """Print the demo API's admin token (for the console at /admin); it is kept in
    state.json (mode 0600) and never printed by `up`."""
    state = state_dir / "state.json"
    token = json.loads(state.read_text()).get("api_admin_token") if state.exists() else None
    if not token:
        print(f"no demo API in {state_dir} (make demo first)", file=sys.stderr)
        return 3
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path,
                   default=Path(os.environ.get("SALON_STATE_DIR", DEFAULT_STATE)))
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "admin-token"):
        sub.add_parser(name).add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    sub.add_parser("images", help="build the node's images that are missing; list them")
    phone = sub.add_parser("phone", help="play the demo salon's phone (simulator driver)")
    phone.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    phone.add_argument("--company", default=DEMO_COMPANY)
    phone.add_argument("--phone", default="79686484488", help="the phone that scans")
    phone.add_argument("action", choices=["scan", "code", "disconnect", "logout", "passkey",
                                          "ban", "refuse", "replaced", "say", "limit"])
    phone.add_argument("code", nargs="?", help="with `code`: the pairing code on the page; "
                       "with `logout`, `ban`, `refuse`, `limit`: WhatsApp's code (406, 101, "
                       "503, 429/463 ...); with `say`: what a client writes to the salon; "
                       "with `passkey`: request, confirmation or the XXXX-XXXX code")
    args = p.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "images":
        return cmd_images()
    if args.command == "phone":
        return cmd_phone(state_dir, args.action, args.code, args.company, args.phone)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status,
                "admin-token": cmd_admin_token}
    return commands[args.command](state_dir)


if __name__ == "__main__":
    sys.exit(main())
