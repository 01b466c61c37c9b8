"""`python -m devstack up|down|status` — the local stack of real components.

up      install nothing (scripts/bootstrap.sh does that), start every component, apply the
        CRDs, start the operator and the API when they exist, create the demo salon, print
        what to open and type.
down    stop everything `up` started, by pid (including the pods' processes).
status  show which components run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

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
    crds = sorted(stack.REPO.glob("crds/*.yaml"))
    if crds:
        info.kubectl("apply", "-f", str(stack.REPO / "crds"))
        print(f"[demo] applied {len(crds)} CRD file(s) from crds/")
    if importlib.util.find_spec("salon_sessions.operator.main") is None:
        print("[demo] the operator and the onboarding API are not built yet: the stack stops "
              "here (control plane, node agent, PostgreSQL and Redis are running).")
        print("[demo] stop it with: make down")
        return 0
    print("[demo] the operator is present but the demo wiring is not: see docs/", file=sys.stderr)
    return 0


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


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path,
                   default=Path(os.environ.get("SALON_STATE_DIR", DEFAULT_STATE)))
    args = p.parse_args()
    state_dir = args.state_dir.resolve()
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](state_dir)


if __name__ == "__main__":
    sys.exit(main())
