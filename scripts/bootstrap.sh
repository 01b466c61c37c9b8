#!/usr/bin/env bash
# Installs what the stack and the tests need, idempotently; fast when everything is there.
#   1. Debian packages: postgresql, pgbouncer (the tests behind a pooler), redis-server,
#      prometheus, chromium, zbar, openssl, and the
#      node's runtime (containerd, runc, CNI plugins, iptables/ipset/conntrack, catatonit for the
#      pause image, mmdebstrap and buildah for the images)
#   2. the virtualenv .venv with the project and its dev tools (reinstalled when pyproject changes)
#   3. the Kubernetes control plane, the node, CoreDNS, kube-router, kwok and helm, built from the
#      Go module proxy into a cache
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
say() { printf '[bootstrap] %s\n' "$*"; }
t0=$(date +%s)

# 1. Debian packages ---------------------------------------------------------------------------
DEBS=(postgresql pgbouncer redis-server prometheus chromium zbar-tools libzbar0 openssl make
      containerd runc containernetworking-plugins iptables conntrack ipset socat iproute2
      catatonit mmdebstrap buildah)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/tmp/salon-apt.log 2>&1 || { tail -20 /tmp/salon-apt.log; say "apt-get install failed"; exit 1; }
fi
# Debian starts its own PostgreSQL and Redis services on install; the stack runs its own.

# 2. the virtualenv ----------------------------------------------------------------------------
PY="${PYTHON:-python3}"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  say "installing the project into .venv"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]' >/tmp/salon-pip.log 2>&1 || { tail -20 /tmp/salon-pip.log; say "pip install failed"; exit 1; }
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# 3. Kubernetes, its node tools and helm ---------------------------------------------------------
bin_dir=$(bash scripts/build-k8s.sh)
say "ready in $(( $(date +%s) - t0 ))s (Kubernetes binaries: $bin_dir)"
