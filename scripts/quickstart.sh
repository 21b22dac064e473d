#!/usr/bin/env bash
# The QuickShip story on your machine, in one command:
#
#   scripts/quickstart.sh
#
# 1. installs what is missing (openssl, curl, dig; the AWS CLI from PyPI), builds (or
#    reuses) the local Kubernetes control plane (scripts/build-controlplane.sh, cached in
#    ~/.cache/waymark/controlplane) and Waymark (cargo build, in
#    ${CARGO_TARGET_DIR:-~/.cache/waymark/target});
# 2. starts a throw-away control plane on loopback (etcd, kube-apiserver,
#    kube-controller-manager: scripts/controlplane.sh), applies crds/ and
#    examples/quickship/ (the Deployments create their pods);
# 3. plays the kubelet, which this control plane does not have: gives each pod an IP and
#    the Ready condition through the status subresource;
# 4. runs `waymark run` on free loopback ports, waits until the pods and the
#    user-auth-db table are registered, and prints what QuickShip's OrderProcessor asks:
#      aws servicediscovery discover-instances ... user-auth-db environment=prod
#      dig SRV inventory-manager.quickship.local
# 5. stops everything and deletes its temporary files (also on Ctrl-C or failure).
#
# Progress goes to stderr, the answers to stdout. Needs Rust (cargo), Go >= 1.24 for the
# first control-plane build (about 15 minutes on 2 cores, once), python3 with pip.
# WAYMARK_QUICKSTART_KEEP=1 keeps the temporary directory (logs, kubeconfig);
# WAYMARK_QUICKSTART_BIN=/path/to/waymark uses that binary instead of building one.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

t0=$(date +%s)
log() { printf '[quickstart +%ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- prerequisites -----------------------------------------------------------
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v dig >/dev/null || need+=(dnsutils)
# protoc (protobuf-compiler): building Waymark compiles etcd's protos (the etcd client crate).
command -v protoc >/dev/null || need+=(protobuf-compiler)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi
command -v python3 >/dev/null || die "python3 not found: Python >= 3.9 with pip is needed for the AWS CLI"
if ! command -v aws >/dev/null; then
  log "installing the AWS CLI (pip)"
  python3 -m pip install --quiet awscli==1.45.11 >&2
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  command -v aws >/dev/null || die "the AWS CLI was installed but 'aws' is not on PATH (add pip's script directory)"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"

# --- build -------------------------------------------------------------------
log "building (or reusing) the control plane"
scripts/build-controlplane.sh
if [[ -n "${WAYMARK_QUICKSTART_BIN:-}" ]]; then
  waymark=$WAYMARK_QUICKSTART_BIN # a binary built already (tests/quickstart.rs)
else
  log "building waymark (cargo build)"
  cargo build --quiet --bin waymark
  waymark="$CARGO_TARGET_DIR/debug/waymark"
fi
[[ -x "$waymark" ]] || die "no binary at $waymark"

# --- cleanup, whatever happens -------------------------------------------------
dir=$(mktemp -d "${TMPDIR:-/tmp}/waymark-quickstart.XXXXXX")
waymark_pid=""
cp_up=0
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$waymark_pid" ]] && kill -0 "$waymark_pid" 2>/dev/null; then
    kill -TERM "$waymark_pid" 2>/dev/null || true
    wait "$waymark_pid" 2>/dev/null || true
  fi
  if ((status != 0)) && [[ -s "$dir/waymark.log" ]]; then
    log "waymark's log (last 30 lines):"
    tail -n 30 "$dir/waymark.log" >&2
  fi
  if ((cp_up)); then
    scripts/controlplane.sh down "$dir/controlplane" >/dev/null 2>&1 || true
  fi
  if [[ -n "${WAYMARK_QUICKSTART_KEEP:-}" ]]; then
    log "kept $dir"
  else
    rm -rf "$dir"
  fi
  log "stopped everything"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- control plane, CRDs, the QuickShip example ---------------------------------
log "starting a local control plane in $dir/controlplane"
cp_up=1
scripts/controlplane.sh up "$dir/controlplane" --with-controller-manager --owner-pid $$ >/dev/null
kubeconfig="$dir/controlplane/kubeconfig"
# shellcheck source=/dev/null
kubectl_bin=$(. "$dir/controlplane/env" && printf '%s' "${WAYMARK_KUBECTL:-kubectl}")
k() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

log "kubectl apply -f crds/"
k apply -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s \
  crd/waymarknamespaces.waymark.dev crd/servicediscoveries.waymark.dev >/dev/null
log "kubectl apply -f examples/quickship/"
k apply -f examples/quickship/ >/dev/null

# --- waymark run ------------------------------------------------------------------
free_ports() { # three loopback ports that are free for TCP and UDP right now
  python3 - <<'PY'
import socket
ports, held = [], []
while len(ports) < 3:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    held += [t, u]
    ports.append(port)
print(*ports)
PY
}
ready=0
for attempt in 1 2 3; do
  read -r api_port dns_port metrics_port < <(free_ports)
  log "starting waymark run (API 127.0.0.1:$api_port, DNS 127.0.0.1:$dns_port, metrics 127.0.0.1:$metrics_port)"
  "$waymark" run --kubeconfig "$kubeconfig" --data-dir "$dir/waymark-data" \
    --api-addr "127.0.0.1:$api_port" --dns-addr "127.0.0.1:$dns_port" \
    --metrics-addr "127.0.0.1:$metrics_port" --lease-namespace quickship \
    --log warn </dev/null >"$dir/waymark.log" 2>&1 &
  waymark_pid=$!
  for _ in $(seq 1 300); do
    if ! kill -0 "$waymark_pid" 2>/dev/null; then break; fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$metrics_port/readyz" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) && break
  kill -TERM "$waymark_pid" 2>/dev/null || true
  wait "$waymark_pid" 2>/dev/null || true
  waymark_pid=""
  grep -q "cannot listen" "$dir/waymark.log" || die "waymark run did not become ready"
  log "a port was taken meanwhile (attempt $attempt); trying others"
done
((ready)) || die "waymark run did not start"
log "waymark is ready (every watch has listed the cluster)"

# --- play the kubelet: pod IPs and readiness ---------------------------------------
# Addresses from the story's diagram (InventoryManager at 10.0.1.5, 10.0.2.3, 10.0.3.7).
# Nothing connects to them: health follows readiness (healthCheck: Readiness).
wait_pods() { # wait_pods LABEL COUNT: prints the names of the Deployment's pods
  local names
  for _ in $(seq 1 600); do
    names=$(k -n quickship get pods -l "app=$1" -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}')
    if [[ $(grep -c . <<<"$names") -ge $2 ]]; then sort <<<"$names"; return 0; fi
    sleep 0.1
  done
  die "the $1 Deployment did not create $2 pods"
}
set_ready() { # set_ready POD IP
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  k -n quickship patch pod "$1" --subresource=status --type=merge -p "{\"status\": {
    \"phase\": \"Running\", \"podIP\": \"$2\", \"podIPs\": [{\"ip\": \"$2\"}], \"startTime\": \"$now\",
    \"conditions\": [
      {\"type\": \"PodScheduled\", \"status\": \"True\", \"lastTransitionTime\": \"$now\"},
      {\"type\": \"ContainersReady\", \"status\": \"True\", \"lastTransitionTime\": \"$now\"},
      {\"type\": \"Ready\", \"status\": \"True\", \"lastTransitionTime\": \"$now\"}]}}" >/dev/null
}
log "waiting for the Deployments' pods"
mapfile -t inventory < <(wait_pods inventory-manager 3)
mapfile -t orders < <(wait_pods order-processor 2)
inventory_ips=(10.0.1.5 10.0.2.3 10.0.3.7)
order_ips=(10.0.4.8 10.0.4.9)
log "setting pod IPs and Ready through the status subresource"
for i in 0 1 2; do set_ready "${inventory[$i]}" "${inventory_ips[$i]}"; done
for i in 0 1; do set_ready "${orders[$i]}" "${order_ips[$i]}"; done
ready_ms=$(date +%s%3N)

# --- wait until registered ------------------------------------------------------
discover() { # discover SERVICE: the DiscoverInstances response body (healthy instances)
  curl -fsS "http://127.0.0.1:$api_port/" \
    -H 'X-Amz-Target: Route53AutoNaming_v20170314.DiscoverInstances' \
    -H 'Content-Type: application/x-amz-json-1.1' \
    -d "{\"NamespaceName\": \"quickship.local\", \"ServiceName\": \"$1\"}" 2>/dev/null || true
}
count() { python3 -c 'import json,sys
try: print(len(json.load(sys.stdin)["Instances"]))
except Exception: print(0)'; }
registered=0
for _ in $(seq 1 600); do
  if [[ $(discover inventory-manager | count) -eq 3 && $(discover order-processor | count) -eq 2 \
        && $(discover user-auth-db | count) -eq 1 ]]; then
    registered=1
    break
  fi
  sleep 0.05
done
((registered)) || die "the QuickShip instances were not registered within 30 s"
log "all QuickShip instances registered (seen $(($(date +%s%3N) - ready_ms)) ms after the last pod turned Ready, polling included)"
# The status counts on the CRDs are written at most once a second: wait for them.
for _ in $(seq 1 100); do
  [[ $(k -n quickship get servicediscovery inventory-manager -o 'jsonpath={.status.instances.healthy}') == 3 ]] && break
  sleep 0.1
done

# --- what the user came for ----------------------------------------------------------
show() { printf '\n$ %s\n' "$*"; }
show kubectl get servicediscoveries -n quickship
k get servicediscoveries -n quickship

show aws servicediscovery discover-instances --namespace-name quickship.local \
  --service-name user-auth-db --query-parameters environment=prod \
  --endpoint-url "http://127.0.0.1:$api_port"
# Dummy credentials (Waymark accepts any), no user configuration, and no `data-` host
# prefix (see README "Cloud Map API").
env AWS_ACCESS_KEY_ID=quickstart AWS_SECRET_ACCESS_KEY=quickstart AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONFIG_FILE="$dir/no-aws-config" AWS_SHARED_CREDENTIALS_FILE="$dir/no-aws-credentials" \
  AWS_DISABLE_HOST_PREFIX_INJECTION=true \
  aws servicediscovery discover-instances --namespace-name quickship.local \
  --service-name user-auth-db --query-parameters environment=prod \
  --endpoint-url "http://127.0.0.1:$api_port" --output json

show dig @127.0.0.1 -p "$dns_port" SRV inventory-manager.quickship.local +noall +answer +additional
dig @127.0.0.1 -p "$dns_port" SRV inventory-manager.quickship.local +noall +answer +additional

printf '\nOrderProcessor reads the table name from the first instance: tablename=UserAuth;\n'
printf 'and reaches a healthy InventoryManager at one of the SRV targets above (port 8080).\n'
log "done; stopping"
