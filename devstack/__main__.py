"""`python -m devstack up|down|status|phone|images` — the local stack of real components.

up      install nothing (scripts/bootstrap.sh does that), start every component, apply the
        CRDs, start the operator and the API, create the demo salon, print what to open and
        type.
down    stop everything `up` started, by pid (including the pods' processes).
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
import sys
import urllib.request
from pathlib import Path
from typing import Any

from devstack import stack
from devstack.procs import StartError, pid_alive, pid_dir

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
    print(f"[demo] Kubernetes  {info.kube_server} (node {info.node_name} Ready)")
    print(f"[demo] kubeconfig  {kc}")
    print(f"[demo]   export KUBECONFIG={kc}")
    print(f"[demo]   kubectl get nodes      (kubectl: {info.bin_dir}/kubectl)")
    print(f"[demo] secrets (database and Redis URLs with passwords) are in {state_dir}/state.json")
    info.kubectl("apply", "-f", str(stack.REPO / "crds"))
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/salonsessions.wa.salonsessions.io")
    print("[demo] applied the SalonSession CRD from crds/")
    try:
        stack.start_operator(state_dir, info, namespace=DEMO_NAMESPACE)
        info.api_url, info.api_admin_token = stack.start_api(state_dir, info,
                                                             namespace=DEMO_NAMESPACE)
        info.save()
        link = create_demo_salon(info)
    except (StartError, OSError, RuntimeError) as exc:
        print(f"[demo] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"[demo] operator and onboarding API running; demo salon {DEMO_COMPANY} created "
          f"(simulator driver)")
    print(f"[demo] onboarding page:  {link}")
    print(f"[demo] API docs:         {info.api_url}/docs")
    print(f"[demo] watch it:         {info.bin_dir}/kubectl --kubeconfig {kc} "
          f"get salonsessions -w")
    print(f"[demo] terminal QR:      make qr        (salon-sessions qr {DEMO_COMPANY})")
    print("[demo] play the phone:   .venv/bin/python -m devstack phone scan        "
          "(link with the QR on screen)")
    print("                         .venv/bin/python -m devstack phone code ABCD-1234   "
          "(enter a pairing code)")
    print("                         .venv/bin/python -m devstack phone disconnect | logout")
    print("[demo] stop everything:  make down")
    return 0


DEMO_NAMESPACE = "default"
DEMO_COMPANY = "company_1001"


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
    return str(token["onboarding_url"])


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
            else:
                msg = {"action": kind}
            heard = await redis.publish(channels.simulator_channel(company), json.dumps(msg))
            print(f"phone: {kind} sent to {company} ({heard} simulator listening)")
            return 0 if heard else 1
        finally:
            await redis.aclose()

    return asyncio.run(run())


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path,
                   default=Path(os.environ.get("SALON_STATE_DIR", DEFAULT_STATE)))
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        sub.add_parser(name).add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    sub.add_parser("images", help="build the node's images that are missing; list them")
    phone = sub.add_parser("phone", help="play the demo salon's phone (simulator driver)")
    phone.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    phone.add_argument("--company", default=DEMO_COMPANY)
    phone.add_argument("--phone", default="79686484488", help="the phone that scans")
    phone.add_argument("action", choices=["scan", "code", "disconnect", "logout"])
    phone.add_argument("code", nargs="?", help="with `code`: the pairing code on the page")
    args = p.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "images":
        return cmd_images()
    if args.command == "phone":
        return cmd_phone(state_dir, args.action, args.code, args.company, args.phone)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    return commands[args.command](state_dir)


if __name__ == "__main__":
    sys.exit(main())
