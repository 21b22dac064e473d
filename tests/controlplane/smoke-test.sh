#!/usr/bin/env bash
# shellcheck disable=SC1091 # the DIR/env files are generated at run time
# End-to-end check of scripts/controlplane.sh: starts two control planes in
# parallel (minimal and --with-controller-manager), exercises what Waymark's
# tests rely on, stops both and checks that no process is left.
#
# Usage: tests/controlplane/smoke-test.sh [WORK_DIR]   (default: a mktemp dir)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cp="$repo_root/scripts/controlplane.sh"
work=${1:-$(mktemp -d /tmp/waymark-cp-smoke.XXXXXX)}
mkdir -p "$work"
min=$work/minimal full=$work/full

step() { printf '\n=== %s\n' "$*" >&2; }
fail() { printf 'SMOKE TEST FAILED: %s\n' "$*" >&2; exit 1; }
cleanup() { "$cp" down "$min" >/dev/null 2>&1 || true; "$cp" down "$full" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Build first so that the two parallel `up`s below measure startup, not the build.
"$repo_root/scripts/build-controlplane.sh"

step "two control planes in parallel; the full one is owned by a sleeping process"
sleep 600 & owner=$!
"$cp" up "$min" >"$work/minimal.env" &
up_min=$!
"$cp" up "$full" --with-controller-manager --owner-pid "$owner" >"$work/full.env" &
up_full=$!
wait "$up_min" || fail "up minimal"
wait "$up_full" || fail "up full"
grep -q WAYMARK_APISERVER_URL "$work/minimal.env" || fail "up did not print the env"

# The kubectl that `up` found or built.
kubectl=$(. "$min/env" && echo "$WAYMARK_KUBECTL")
k() { KUBECONFIG=$1/kubeconfig "$kubectl" "${@:2}"; }

for d in "$min" "$full"; do
  step "basic checks against $d"
  [[ "$(k "$d" get --raw /readyz)" == ok ]] || fail "/readyz"
  [[ "$(k "$d" auth can-i '*' '*')" == yes ]] || fail "admin is not cluster-admin"
  k "$d" version

  # Namespace then pod immediately: the default ServiceAccount must appear in time.
  k "$d" create namespace smoke
  k "$d" -n smoke create -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: unbound, labels: {app: web}}
spec:
  containers: [{name: c, image: registry.k8s.io/pause:3.10, ports: [{containerPort: 8080}]}]
EOF
  [[ "$(k "$d" -n smoke get pod unbound -o jsonpath='{.status.phase}')" == Pending ]] || fail "pod not Pending"

  k "$d" create -f - <<'EOF'
apiVersion: v1
kind: Node
metadata: {name: fake-node-1, labels: {topology.kubernetes.io/zone: zone-a}}
EOF
  k "$d" -n smoke create -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: bound, labels: {app: web}}
spec:
  nodeName: fake-node-1
  containers: [{name: c, image: registry.k8s.io/pause:3.10, ports: [{containerPort: 8080}]}]
EOF
  k "$d" -n smoke patch pod bound --subresource=status --type=merge \
    -p '{"status":{"podIP":"10.1.2.3","podIPs":[{"ip":"10.1.2.3"}],"conditions":[{"type":"Ready","status":"True"}]}}'
  [[ "$(k "$d" -n smoke get pod bound -o jsonpath='{.status.podIP}/{.status.conditions[?(@.type=="Ready")].status}')" == "10.1.2.3/True" ]] \
    || fail "pod status patch not persisted"

  # TokenRequest API, and the token authenticates as the ServiceAccount.
  k "$d" -n smoke create serviceaccount robot
  token=$(k "$d" -n smoke create token robot --duration=10m)
  who=$(KUBECONFIG=/dev/null "$kubectl" --server="$(. "$d/env" && echo "$WAYMARK_APISERVER_URL")" \
    --certificate-authority="$d/pki/ca.crt" --token="$token" auth whoami -o jsonpath='{.status.userInfo.username}')
  [[ "$who" == system:serviceaccount:smoke:robot ]] || fail "token authenticates as '$who'"
done

step "garbage collection and EndpointSlices (full mode only)"
k "$full" -n smoke create configmap owner
owner_uid=$(k "$full" -n smoke get configmap owner -o jsonpath='{.metadata.uid}')
k "$full" -n smoke create -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: $owner_uid}]
EOF
k "$full" -n smoke delete configmap owner
for i in $(seq 1 60); do
  k "$full" -n smoke get configmap dependent >/dev/null 2>&1 || break
  (( i < 60 )) || fail "dependent ConfigMap was not garbage collected"
  sleep 1
done
echo "dependent ConfigMap garbage collected after ~${i}s"
k "$full" -n smoke create service clusterip web --tcp=80:8080
for i in $(seq 1 60); do
  addrs=$(k "$full" -n smoke get endpointslices -l kubernetes.io/service-name=web \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}')
  [[ "$addrs" == *"10.1.2.3=true"* ]] && break
  (( i < 60 )) || fail "no EndpointSlice endpoint for the bound pod (got '$addrs')"
  sleep 1
done
echo "EndpointSlice endpoints: $addrs"

step "the minimal mode has no garbage collector or EndpointSlice controller"
k "$min" -n smoke create service clusterip web --tcp=80:8080
sleep 3
[[ -z "$(k "$min" -n smoke get endpointslices -o name)" ]] || fail "EndpointSlices in minimal mode"

step "watchdog: killing the owner stops the full control plane"
full_pids=$(. "$full/env" && echo "$WAYMARK_ETCD_PID $WAYMARK_APISERVER_PID $WAYMARK_CONTROLLER_MANAGER_PID $WAYMARK_WATCHDOG_PID")
kill "$owner"; wait "$owner" 2>/dev/null || true
for i in $(seq 1 30); do
  st=$("$cp" status "$full" || true)
  [[ "$st" == *running* ]] || break
  (( i < 30 )) || { "$cp" status "$full"; fail "full control plane still running 30s after its owner exited"; }
  sleep 1
done
"$cp" status "$full" || true
cat "$full/watchdog.log"

step "down"
min_pids=$(. "$min/env" && echo "$WAYMARK_ETCD_PID $WAYMARK_APISERVER_PID $WAYMARK_CONTROLLER_MANAGER_PID")
"$cp" down "$min"
"$cp" down "$min" # idempotent
"$cp" down "$full"
for pid in $min_pids $full_pids; do
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  # A zombie is already dead; it only waits for init to reap it.
  [[ -z "$state" || "$state" == Z ]] || fail "pid $pid still running after down"
done
trap - EXIT
printf '\nSMOKE TEST PASSED (work dir %s)\n' "$work" >&2
