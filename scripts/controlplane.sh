#!/usr/bin/env bash
# Loopback Kubernetes control plane for Waymark's tests (like controller-runtime's
# envtest, but with real TLS/RBAC and, optionally, a full kube-controller-manager).
#
#   scripts/controlplane.sh up DIR [--with-controller-manager] [--owner-pid PID]
#   scripts/controlplane.sh down DIR
#   scripts/controlplane.sh status DIR
#
# up:     builds the binaries if needed (scripts/build-controlplane.sh), generates a
#         CA and certificates with openssl, starts etcd, kube-apiserver and
#         kube-controller-manager on free 127.0.0.1 ports, waits for /readyz and for
#         the `default` ServiceAccount, writes DIR/kubeconfig (admin, client cert,
#         group system:masters) and DIR/env (shell-sourceable), prints DIR/env on
#         stdout and exits 0. The processes keep running, fully detached (own
#         session, stdin /dev/null, output in DIR/*.log), so a caller that captures
#         our stdout sees EOF as soon as `up` returns.
#         Any state from a previous run in DIR (etcd data, certificates) is wiped.
#
#         kube-controller-manager always runs, in one of two modes:
#           default (minimal): only serviceaccount-controller,
#             root-ca-certificate-publisher-controller and namespace-controller.
#             The ServiceAccount admission plugin stays enabled (as in a real
#             cluster) and rejects pods whose ServiceAccount does not exist; the
#             real serviceaccount controller creates `default` in every namespace
#             within milliseconds, and the admission plugin retries the lookup of
#             `default` for ~1-2 s, so `kubectl create ns x && kubectl -n x create
#             -f pod.yaml` works. The namespace controller makes namespace deletion
#             finish (instead of staying Terminating forever). No garbage
#             collector, no EndpointSlice controller, nothing else touches objects.
#           --with-controller-manager (full): all default controllers (garbage
#             collector, endpointslice, deployment, ...) except
#             node-lifecycle-controller: without a kubelet there are no node
#             heartbeats, so it would mark every Node NotReady after ~50 s, flip
#             pods' Ready condition to False and taint/evict them, undoing the
#             status that tests set through the status subresource.
#           WAYMARK_KCM_CONTROLLERS overrides the --controllers value in both modes.
#
#         --owner-pid PID: a detached watchdog runs `down DIR` as soon as PID exits,
#         so a test process that dies (panic, SIGKILL) never leaks processes.
#
# down:   stops everything `up` started in DIR (SIGTERM, SIGKILL after a few
#         seconds). Idempotent. Keeps logs, certificates and etcd data for debugging.
# status: prints the state of each process and /readyz; exit 0 iff all are up and ready.
#
# Environment:
#   WAYMARK_CACHE_DIR              build cache root (see build-controlplane.sh)
#   WAYMARK_CONTROLPLANE_BIN_DIR   use binaries from this directory, skip the build
#   WAYMARK_CONTROLPLANE_TIMEOUT   seconds to wait for readiness (default 120)
#   WAYMARK_KCM_CONTROLLERS        kube-controller-manager --controllers value
#
# Requires: bash, openssl, curl, coreutils; Go for the first build. python3 and
# ss (iproute2) are used when present.
#
# Developer use:
#   scripts/controlplane.sh up /tmp/wm-cp && export KUBECONFIG=/tmp/wm-cp/kubeconfig && kubectl get ns
#   scripts/controlplane.sh down /tmp/wm-cp
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_PATH=$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")
readonly SCRIPT_DIR SCRIPT_PATH
readonly SERVICE_CIDR=10.96.0.0/16
readonly SERVICE_IP=10.96.0.1 # first address of SERVICE_CIDR: the `kubernetes` Service
readonly SA_ISSUER=https://kubernetes.default.svc.cluster.local
readonly MINIMAL_CONTROLLERS=serviceaccount-controller,root-ca-certificate-publisher-controller,namespace-controller
readonly FULL_CONTROLLERS='*,-node-lifecycle-controller'
# Components in start order; `down` stops them in reverse.
readonly COMPONENTS=(etcd kube-apiserver kube-controller-manager)

t0=$(date +%s%N)
log() { printf '[controlplane +%ss] %s\n' "$(( ($(date +%s%N) - t0) / 1000000000 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$SCRIPT_PATH" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --------------------------------------------------------------------------
# Process bookkeeping. Each pid file holds "PID STARTTIME" (field 22 of
# /proc/PID/stat), so a recycled PID is never mistaken for ours and never killed.
# --------------------------------------------------------------------------

# proc_field PID N: field N (1-based, as in proc(5)) of /proc/PID/stat.
proc_field() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Field 2 (comm) is parenthesised and may contain spaces: cut after the last ')'.
  stat=${stat##*) }
  local -a f
  read -r -a f <<<"$stat"
  printf '%s\n' "${f[$(( $2 - 3 ))]}"
}

# pid_alive PID STARTTIME: the process exists, is the same one, and is not a zombie.
pid_alive() {
  local pid=$1 start=$2 state
  [[ -n "$pid" && -n "$start" ]] || return 1
  [[ "$(proc_field "$pid" 22 2>/dev/null)" == "$start" ]] || return 1
  state=$(proc_field "$pid" 3 2>/dev/null) || return 1
  [[ "$state" != Z && "$state" != X ]]
}

pid_file() { printf '%s/run/%s.pid\n' "$DIR" "$1"; }

record_pid() { # name pid
  local start
  start=$(proc_field "$2" 22) || die "process $1 (pid $2) vanished immediately; see $DIR/$1.log"
  printf '%s %s\n' "$2" "$start" >"$(pid_file "$1")"
}

read_pid() { # name -> "PID STARTTIME" or nothing
  local f
  f=$(pid_file "$1")
  if [[ -f "$f" ]]; then cat "$f"; fi
}

component_alive() { # name
  local pid start
  read -r pid start <<<"$(read_pid "$1")" || true
  pid_alive "${pid:-}" "${start:-}"
}

component_pid() { local pid _s; read -r pid _s <<<"$(read_pid "$1")" || true; printf '%s' "${pid:-}"; }

# start_daemon NAME CMD...: run CMD in its own session (no controlling terminal,
# immune to the caller's Ctrl-C/SIGHUP), stdin from /dev/null, output appended to
# DIR/NAME.log, and fd 9 (our DIR lock) closed so the daemon does not hold it.
# In a non-interactive bash, a background child is not a process-group leader, so
# setsid(1) calls setsid() itself without forking and $! is the daemon's PID.
start_daemon() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/$name.log" 2>&1 9>&- &
  record_pid "$name" "$!"
}

# stop_component NAME [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period.
# The daemons are session (and process-group) leaders, so the whole group is
# signalled, which also takes down children such as the watchdog's `sleep`.
stop_component() {
  local name=$1 grace=${2:-5} pid start i
  read -r pid start <<<"$(read_pid "$name")" || true
  if pid_alive "${pid:-}" "${start:-}"; then
    if [[ "$pid" == "$$" ]]; then
      # We are the watchdog running `down` via exec: do not kill ourselves.
      rm -f "$(pid_file "$name")"
      return 0
    fi
    signal_group TERM "$pid"
    for (( i = 0; i < grace * 10; i++ )); do
      pid_alive "$pid" "$start" || break
      sleep 0.1
    done
    if pid_alive "$pid" "$start"; then
      log "$name (pid $pid) did not exit after ${grace}s; sending SIGKILL"
      signal_group KILL "$pid"
      for (( i = 0; i < 50; i++ )); do pid_alive "$pid" "$start" || break; sleep 0.1; done
    fi
    pid_alive "$pid" "$start" && log "WARNING: $name (pid $pid) is still alive"
    log "stopped $name (pid $pid)"
  fi
  rm -f "$(pid_file "$name")"
}

signal_group() { # SIG PID
  if [[ "$(proc_field "$2" 5 2>/dev/null)" == "$2" ]]; then
    kill "-$1" -- "-$2" 2>/dev/null || true
  else
    kill "-$1" "$2" 2>/dev/null || true
  fi
}

# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------

# free_ports N: N distinct currently-free TCP ports on 127.0.0.1. They are only
# free at this instant: another process may take one before our daemon binds it,
# so every start below verifies that *our* process owns the port and retries
# with fresh ports otherwise (this is what makes parallel `up` runs safe).
free_ports() {
  if command -v python3 >/dev/null 2>&1 && python3 -c '' 2>/dev/null; then
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))  # the kernel picks a free port; binding all at once keeps them distinct
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
  else
    # Fallback: random ports below the ephemeral range that nobody listens on.
    local -a ports=() p
    while (( ${#ports[@]} < $1 )); do
      p=$(( 20000 + RANDOM % 12000 ))
      [[ " ${ports[*]} " == *" $p "* ]] && continue
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
      ports+=("$p")
    done
    echo "${ports[*]}"
  fi
}

# owns_port PID PORT: PID is listening on 127.0.0.1:PORT.
owns_port() {
  if command -v ss >/dev/null 2>&1; then
    local line
    line=$(ss -Htlnp "sport = :$2" 2>/dev/null) || line=""
    [[ -n "$line" ]] || return 1
    # If ss cannot show owners (e.g. /proc mounted with hidepid), a listener is
    # accepted as ours; the process being alive is checked by the caller.
    [[ "$line" == *"pid=$1,"* || "$line" != *users:* ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null
  fi
}

# wait_listening NAME PORT... : wait until NAME's process listens on all PORTs.
# Returns 1 if the process died, 2 if it died because a port was taken, 3 on timeout.
wait_listening() {
  local name=$1; shift
  local pid start deadline=$(( $(date +%s) + 60 )) p ok
  read -r pid start <<<"$(read_pid "$name")"
  while :; do
    if ! pid_alive "$pid" "$start"; then
      wait "$pid" 2>/dev/null || true # reap it
      if tail -c +"$(( log_offset + 1 ))" "$DIR/$name.log" | grep -qiE 'address already in use'; then
        return 2
      fi
      return 1
    fi
    ok=1
    for p in "$@"; do owns_port "$pid" "$p" || { ok=0; break; }; done
    (( ok )) && return 0
    (( $(date +%s) < deadline )) || return 3
    sleep 0.1
  done
}

# start_with_retry NAME NPORTS START_FUNC: picks NPORTS free ports into the
# global array PORTS, runs START_FUNC, and retries with fresh ports if one of
# them was taken in between.
start_with_retry() {
  local name=$1 nports=$2 fn=$3 attempt rc
  for attempt in 1 2 3 4 5 6; do
    read -r -a PORTS <<<"$(free_ports "$nports")"
    log_offset=$(stat -c %s "$DIR/$name.log" 2>/dev/null || echo 0)
    "$fn"
    rc=0
    wait_listening "$name" "${PORTS[@]}" || rc=$?
    case $rc in
      0) return 0 ;;
      2) log "$name: port ${PORTS[*]} was taken by another process (attempt $attempt); retrying with new ports"
         rm -f "$(pid_file "$name")" ;;
      1) fail "$name exited during startup" "$name" ;;
      *) fail "$name did not start listening on ${PORTS[*]} within 60s" "$name" ;;
    esac
  done
  fail "$name: could not get free ports after $attempt attempts" "$name"
}

# --------------------------------------------------------------------------
# TLS material (openssl). A private CA signs the apiserver serving certificate
# and the client certificates; the apiserver trusts it via --client-ca-file.
# A separate RSA key pair signs ServiceAccount tokens.
# --------------------------------------------------------------------------
gen_pki() {
  local pki=$DIR/pki
  mkdir -p "$pki"
  # Own minimal config: independent of the distribution's openssl.cnf defaults.
  cat >"$pki/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[serving]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  (
    cd "$pki"
    umask 077
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=waymark-test-ca" \
      -config openssl.cnf -extensions v3_ca -out ca.crt
    # leaf NAME SUBJECT EXTENSIONS
    leaf() {
      openssl genrsa -out "$1.key" 2048 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -config openssl.cnf -out "$1.csr"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -CAserial ca.srl \
        -sha256 -days 3650 -extfile openssl.cnf -extensions "$3" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    leaf apiserver "/CN=kube-apiserver" serving
    # system:masters is bound to cluster-admin and bypasses RBAC: the test admin.
    leaf admin "/O=system:masters/CN=waymark-admin" client
    # The identity kubeadm gives the controller manager; the bootstrap RBAC
    # policy has a ClusterRole/Binding for it (it only needs to mint tokens for
    # the per-controller ServiceAccounts, see --use-service-account-credentials).
    leaf controller-manager "/CN=system:kube-controller-manager" client
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || fail "openssl failed generating certificates in $pki"
}

# write_kubeconfig FILE CLIENT_NAME: self-contained (certificates embedded).
write_kubeconfig() {
  local file=$1 client=$2
  b64() { base64 <"$1" | tr -d '\n'; }
  ( umask 077; cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: waymark-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$DIR/pki/ca.crt")
users:
- name: $client
  user:
    client-certificate-data: $(b64 "$DIR/pki/$client.crt")
    client-key-data: $(b64 "$DIR/pki/$client.key")
contexts:
- name: waymark-test
  context:
    cluster: waymark-test
    user: $client
current-context: waymark-test
EOF
  )
}

# api GET-PATH: curl the apiserver as admin (fails on HTTP errors unless API_NOFAIL=1).
api() {
  local -a fail=(-f)
  [[ -z "${API_NOFAIL:-}" ]] || fail=()
  curl "${fail[@]}" -sS --max-time 5 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT$1"
}

# --------------------------------------------------------------------------
# Daemons
# --------------------------------------------------------------------------
start_etcd() {
  ETCD_CLIENT_PORT=${PORTS[0]} ETCD_PEER_PORT=${PORTS[1]}
  rm -rf "$DIR/etcd"
  # --unsafe-no-fsync: test data is disposable; fsync dominates etcd latency
  # (envtest does the same).
  start_daemon etcd "$BIN_DIR/etcd" \
    --name=waymark \
    --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="waymark=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync
}

start_apiserver() {
  APISERVER_PORT=${PORTS[0]}
  local pki=$DIR/pki
  # Default admission plugins stay enabled (ServiceAccount included, see header).
  # --advertise-address=127.0.0.1 keeps it from probing the default route (as in
  # envtest). Endpoints validation rejects loopback IPs, so the apiserver could
  # never publish itself as the endpoint of the `default/kubernetes` Service and
  # would log an error every 10 s: --endpoint-reconciler-type=none. That Service
  # (ClusterIP 10.96.0.1) still exists, just without Endpoints/EndpointSlices.
  start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
    --advertise-address=127.0.0.1 \
    --bind-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false
}

start_controller_manager() {
  KCM_PORT=${PORTS[0]}
  local pki=$DIR/pki kc=$DIR/pki/controller-manager.kubeconfig
  # --use-service-account-credentials: like kubeadm, every controller runs as its
  # own ServiceAccount with the upstream bootstrap RBAC roles.
  # --root-ca-file / --service-account-private-key-file / --cluster-signing-*:
  # kube-root-ca.crt ConfigMaps, legacy token Secrets and CSR signing work.
  # No --authentication/authorization-kubeconfig: its HTTPS port then only serves
  # /healthz and friends (all we need), and it does not log errors about the
  # front-proxy (requestheader) CA that this apiserver does not configure.
  # --flex-volume-plugin-dir: the default is /usr/libexec/kubernetes/..., which
  # it would create; everything we run stays inside DIR.
  start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$DIR/kcm/certs" \
    --flex-volume-plugin-dir="$DIR/kcm/flexvolume" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --controllers="$KCM_CONTROLLERS" \
    --root-ca-file="$pki/ca.crt" \
    --service-account-private-key-file="$pki/sa.key" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --profiling=false
}

start_watchdog() {
  start_daemon watchdog "$SCRIPT_PATH" __watchdog "$DIR" "$OWNER_PID" "$OWNER_START"
}

# --------------------------------------------------------------------------
# Failure handling during `up`: print log tails, stop what was started.
# --------------------------------------------------------------------------
fail() { # message [component whose log to show]
  log "ERROR: $1"
  local c
  for c in ${2:-${COMPONENTS[*]}}; do
    if [[ -s "$DIR/$c.log" ]]; then
      printf '%s\n' "----- last 30 lines of $DIR/$c.log -----" >&2
      tail -n 30 "$DIR/$c.log" >&2
    fi
  done
  printf '%s\n' "-----" >&2
  exit 1
}

on_up_exit() {
  local rc=$?
  if (( rc != 0 )); then
    log "up failed; stopping anything already started (logs kept in $DIR)"
    do_down || true
  fi
}

# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------
lock_dir() {
  mkdir -p "$DIR/run"
  exec 9>"$DIR/run/lock"
  flock 9
}

cmd_up() {
  local with_kcm=0
  OWNER_PID=""
  while (( $# )); do
    case "$1" in
      --with-controller-manager) with_kcm=1 ;;
      --owner-pid) [[ $# -ge 2 ]] || die "--owner-pid needs a PID"; OWNER_PID=$2; shift ;;
      --owner-pid=*) OWNER_PID=${1#*=} ;;
      *) die "up: unknown argument: $1" ;;
    esac
    shift
  done
  local c
  for c in openssl curl setsid flock; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"
  done
  if [[ -n "$OWNER_PID" ]]; then
    [[ "$OWNER_PID" =~ ^[0-9]+$ ]] || die "--owner-pid: not a PID: $OWNER_PID"
    OWNER_START=$(proc_field "$OWNER_PID" 22 2>/dev/null) || die "--owner-pid $OWNER_PID: no such process"
  fi

  lock_dir
  for c in "${COMPONENTS[@]}" watchdog; do
    component_alive "$c" && die "$c is already running for $DIR (pid $(component_pid "$c")); run: $0 down $DIR"
  done

  # Wipe the previous run's state (only what we create; never DIR itself).
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/kcm" "$DIR/kubeconfig" "$DIR/env" "$DIR"/run/*.pid \
    "$DIR/etcd.log" "$DIR/kube-apiserver.log" "$DIR/kube-controller-manager.log" "$DIR/watchdog.log"
  trap on_up_exit EXIT

  # The watchdog starts first, so the owner dying even while we start up is covered.
  if [[ -n "$OWNER_PID" ]]; then
    start_watchdog
    log "watchdog (pid $(component_pid watchdog)) will run 'down' when pid $OWNER_PID exits"
  fi

  if [[ -n "${WAYMARK_CONTROLPLANE_BIN_DIR:-}" ]]; then
    BIN_DIR=$WAYMARK_CONTROLPLANE_BIN_DIR
  else
    BIN_DIR=$("$SCRIPT_DIR/build-controlplane.sh" --print-bin-dir 9>&-) || die "build failed"
  fi
  for c in etcd kube-apiserver kube-controller-manager; do
    [[ -x "$BIN_DIR/$c" ]] || die "$BIN_DIR/$c is missing"
  done
  local kubectl_bin
  kubectl_bin=$(command -v kubectl 2>/dev/null || true)
  [[ -z "$kubectl_bin" && -x "$BIN_DIR/kubectl" ]] && kubectl_bin=$BIN_DIR/kubectl

  if (( with_kcm )); then KCM_MODE=full; KCM_CONTROLLERS=${WAYMARK_KCM_CONTROLLERS:-$FULL_CONTROLLERS}
  else KCM_MODE=minimal; KCM_CONTROLLERS=${WAYMARK_KCM_CONTROLLERS:-$MINIMAL_CONTROLLERS}; fi

  gen_pki
  log "certificates generated in $DIR/pki"

  start_with_retry etcd 2 start_etcd
  log "etcd (pid $(component_pid etcd)) listening on 127.0.0.1:$ETCD_CLIENT_PORT"

  start_with_retry kube-apiserver 1 start_apiserver
  log "kube-apiserver (pid $(component_pid kube-apiserver)) listening on 127.0.0.1:$APISERVER_PORT"
  write_kubeconfig "$DIR/kubeconfig" admin
  write_kubeconfig "$DIR/pki/controller-manager.kubeconfig" controller-manager

  local timeout=${WAYMARK_CONTROLPLANE_TIMEOUT:-120} deadline
  deadline=$(( $(date +%s) + timeout ))
  until api /readyz >/dev/null 2>&1; do
    component_alive kube-apiserver || fail "kube-apiserver exited before becoming ready" "etcd kube-apiserver"
    component_alive etcd || fail "etcd exited" "etcd kube-apiserver"
    if (( $(date +%s) >= deadline )); then
      log "/readyz after ${timeout}s:"; API_NOFAIL=1 api '/readyz?verbose' 2>&1 | grep -v '^\[+\]' >&2 || true
      fail "kube-apiserver not ready within ${timeout}s (WAYMARK_CONTROLPLANE_TIMEOUT)" "etcd kube-apiserver"
    fi
    sleep 0.2
  done
  log "kube-apiserver is ready"

  start_with_retry kube-controller-manager 1 start_controller_manager
  log "kube-controller-manager (pid $(component_pid kube-controller-manager), $KCM_MODE: $KCM_CONTROLLERS)"
  # Pods in `default` need its ServiceAccount; waiting here also proves the
  # controller manager is working.
  until api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1; do
    component_alive kube-controller-manager || fail "kube-controller-manager exited" kube-controller-manager
    (( $(date +%s) < deadline )) || fail "ServiceAccount default/default not created within ${timeout}s" kube-controller-manager
    sleep 0.2
  done
  log "ServiceAccount default/default exists"

  local envtmp=$DIR/env.tmp
  {
    echo "# Written by scripts/controlplane.sh up. Source it: . $DIR/env"
    q() { printf 'export %s=%q\n' "$1" "$2"; }
    q KUBECONFIG "$DIR/kubeconfig"
    q WAYMARK_CONTROLPLANE_DIR "$DIR"
    q WAYMARK_CONTROLPLANE_BIN_DIR "$BIN_DIR"
    q WAYMARK_KUBECTL "$kubectl_bin"
    q WAYMARK_APISERVER_URL "https://127.0.0.1:$APISERVER_PORT"
    q WAYMARK_ETCD_URL "http://127.0.0.1:$ETCD_CLIENT_PORT"
    q WAYMARK_CONTROLLER_MANAGER_MODE "$KCM_MODE"
    q WAYMARK_ETCD_PID "$(component_pid etcd)"
    q WAYMARK_APISERVER_PID "$(component_pid kube-apiserver)"
    q WAYMARK_CONTROLLER_MANAGER_PID "$(component_pid kube-controller-manager)"
    q WAYMARK_WATCHDOG_PID "$(component_pid watchdog)"
  } >"$envtmp"
  mv "$envtmp" "$DIR/env"
  trap - EXIT
  log "control plane is up: export KUBECONFIG=$DIR/kubeconfig  (or: . $DIR/env)"
  cat "$DIR/env"
}

do_down() {
  local c i
  # The watchdog first, so it does not race us; then reverse start order.
  stop_component watchdog 2
  for (( i = ${#COMPONENTS[@]} - 1; i >= 0; i-- )); do
    c=${COMPONENTS[$i]}
    stop_component "$c" 10
  done
}

cmd_down() {
  (( $# == 0 )) || die "down: unexpected argument: $1"
  [[ -d "$DIR" ]] || { log "$DIR does not exist; nothing to stop"; return 0; }
  lock_dir
  do_down
  rm -f "$DIR/env"
  log "down"
}

cmd_status() {
  (( $# == 0 )) || die "status: unexpected argument: $1"
  local c ok=0 pid
  for c in "${COMPONENTS[@]}" watchdog; do
    pid=$(component_pid "$c")
    if component_alive "$c"; then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    elif [[ "$c" == watchdog && -z "$pid" ]]; then
      printf '%-24s none\n' "$c"
    else
      printf '%-24s stopped\n' "$c"; ok=1
    fi
  done
  if [[ -f "$DIR/kubeconfig" ]]; then
    APISERVER_PORT=$(sed -n 's#^ *server: https://127.0.0.1:\([0-9]*\)$#\1#p' "$DIR/kubeconfig")
    printf '%-24s %s\n' apiserver "https://127.0.0.1:$APISERVER_PORT"
    if api /readyz >/dev/null 2>&1; then printf '%-24s ok\n' /readyz; else printf '%-24s failing\n' /readyz; ok=1; fi
  else
    ok=1
  fi
  return $ok
}

# Hidden: the detached watchdog process. Polls the owner once a second (cheap,
# and needs no cooperation from the owner), then replaces itself with `down`.
cmd_watchdog() {
  local owner=$1 owner_start=$2
  log "watching pid $owner"
  while pid_alive "$owner" "$owner_start"; do sleep 1; done
  log "owner pid $owner exited; stopping the control plane in $DIR"
  exec "$SCRIPT_PATH" down "$DIR"
}

main() {
  (( $# >= 2 )) || usage
  local sub=$1
  DIR=$2
  shift 2
  case "$sub" in
    up) mkdir -p "$DIR" ;;
    down|status|__watchdog) ;;
    *) usage ;;
  esac
  [[ "$DIR" == /* ]] || DIR="$(pwd)/$DIR"
  [[ -d "$DIR" ]] && DIR=$(cd "$DIR" && pwd)
  case "$sub" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) [[ -d "$DIR" ]] || { echo "$DIR does not exist"; exit 1; }; cmd_status "$@" ;;
    __watchdog) cmd_watchdog "$@" ;;
  esac
}

main "$@"
