#!/usr/bin/env bash
# Builds the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), the node (kubelet, kube-proxy), CoreDNS, kube-router (the local
# node's NetworkPolicy enforcement), kwok (fake nodes for the scale benchmark) and helm from
# the Go module proxy into a cache keyed by version (scripts/versions.env).
# Built once per machine; every later run finds the binaries and returns at once.
#
#   scripts/build-k8s.sh            # build what is missing, print the bin directory
#   scripts/build-k8s.sh kwok       # also kwok (only the scale benchmark needs it)
#
# Environment: SALON_CACHE_DIR (default ~/.cache/salon-sessions).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/versions.env"

CACHE_DIR="${SALON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/salon-sessions}"
BIN_DIR="$CACHE_DIR/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
WORK_DIR="$CACHE_DIR/build"
LOG="$CACHE_DIR/build-k8s.log"
mkdir -p "$BIN_DIR" "$WORK_DIR"

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy helm
      coredns kube-router "$@")
missing=()
for b in "${want[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$BIN_DIR"
  exit 0
fi

log() { printf '[build-k8s] %s\n' "$*" >&2; }

# One build at a time per cache: a second caller (a test, another checkout) waits for the
# first and then finds the binaries, instead of racing it on the same output files.
exec 9>"$CACHE_DIR/build.lock"
if ! flock -n 9; then
  log "another build into $CACHE_DIR is running; waiting for it"
  flock 9
fi
missing=()
for b in "${want[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$BIN_DIR"
  exit 0
fi
fail() {
  log "FAILED: $1 — see $LOG (last lines below)"
  tail -n 30 "$LOG" >&2 || true
  exit 1
}

export GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export CGO_ENABLED=0
log "building ${missing[*]} into $BIN_DIR (log: $LOG); this takes a while the first time"
: >"$LOG"

build_kubernetes() {
  local dir="$WORK_DIR/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  # The staging modules (k8s.io/api, k8s.io/apimachinery, ...) are replaced by relative
  # paths in k8s.io/kubernetes' own go.mod; map each of them to its published v0.Y.Z.
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || fail "downloading k8s.io/kubernetes@$K8S_VERSION"
  {
    echo "module salonsessions.local/k8sbuild"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
      | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  (cd "$dir" && go mod tidy) >>"$LOG" 2>&1 || fail "go mod tidy for k8s.io/kubernetes"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitCommit=module-proxy -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    [[ -x "$BIN_DIR/$b" ]] && continue
    log "go build $b"
    (cd "$dir" && go build -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b") >>"$LOG" 2>&1 \
      || fail "go build $b"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
}

build_etcd() {
  local dir="$WORK_DIR/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<GOMOD
module salonsessions.local/etcdbuild

go 1.23

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy) >>"$LOG" 2>&1 || fail "go mod tidy for etcd"
  log "go build etcd"
  (cd "$dir" && go build -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" .) >>"$LOG" 2>&1 || fail "go build etcd"
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

build_helm() {
  log "go install helm $HELM_VERSION"
  GOBIN="$BIN_DIR" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >>"$LOG" 2>&1 || fail "go install helm"
}

# A tool of its own version: installed into tools/<name>-<version>/ and linked into BIN_DIR,
# so that a new version in versions.env leaves a dangling link and rebuilds just that tool.
build_tool() {  # name version package [ldflags]
  local name=$1 version=$2 pkg=$3 ld=${4:-"-s -w"}
  local dir="$CACHE_DIR/tools/$name-$version"
  if [[ ! -x "$dir/$name" ]]; then
    log "go install $pkg@$version"
    mkdir -p "$dir"
    GOBIN="$dir" go install -ldflags "$ld" "$pkg@$version" >>"$LOG" 2>&1 || fail "go install $name"
  fi
  ln -sfn "$dir/$name" "$BIN_DIR/$name"
}

start=$(date +%s)
[[ -x "$BIN_DIR/etcd" ]] || build_etcd
[[ -x "$BIN_DIR/helm" ]] || build_helm
[[ -x "$BIN_DIR/coredns" ]] || build_tool coredns "$COREDNS_VERSION" github.com/coredns/coredns
[[ -x "$BIN_DIR/kube-router" ]] || build_tool kube-router "$KUBE_ROUTER_VERSION" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
[[ " ${want[*]} " != *" kwok "* || -x "$BIN_DIR/kwok" ]] || build_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build_kubernetes
log "done in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
