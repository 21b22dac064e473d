#!/usr/bin/env bash
# The cost of access control on the hot path: DiscoverInstances requests/s
# and latency with SigV4 verification off (--auth none) and on (every request
# signed, verified and authorized by the principal's policy), and on with an
# audit line per read (--audit-reads), the three servers side by side in one
# run, alternating per connection count. The unauthenticated server is also
# sent the signed request, which splits the cost: the bigger request
# (parsing, and wrk's own work on the same cores) vs verifying it.
#
#   scripts/bench-auth.sh
#
# The signed request is signed once per measured run with botocore's own
# SigV4 signer and replayed by wrk (a SigV4 signature stays valid for the
# 5-minute skew window); the server still does the whole verification on
# every request: canonical request, payload hash, signing-key derivation,
# HMAC, constant-time compare, then the policy decision.
#
# Environment knobs: BENCH_DURATION=10, BENCH_WARMUP=2,
# BENCH_CONNECTIONS="8 32", BENCH_THREADS=2, CARGO_TARGET_DIR.
# Installs wrk and curl from Debian when missing; needs python3 with boto3.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
connections=${BENCH_CONNECTIONS:-"8 32"}
max_threads=${BENCH_THREADS:-2}
instances=100
log() { printf '[bench] %s\n' "$*" >&2; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import boto3' 2>/dev/null || python3 -m pip install --quiet boto3==1.43.11

log "building waymark (release)"
cargo build --release --quiet --bin waymark
bin=${CARGO_TARGET_DIR:-$repo/target}/release/waymark

work=$(mktemp -d "${TMPDIR:-/tmp}/waymark-bench-auth.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

akid=AKIABENCHMARK0000001
secret=bench-secret-0123456789abcdef0123
cat >"$work/credentials.yaml" <<CREDS
principals:
  - name: bench
    accessKeys:
      - {accessKeyId: $akid, secretAccessKey: $secret}
    inlinePolicies:
      - Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: "servicediscovery:*"
            Resource: "*"
CREDS

declare -A port
start() { # start NAME FLAGS...
  local name=$1 metrics
  shift
  port[$name]=$(free_port)
  metrics=$(free_port)
  WAYMARK_DNS_ADDR=127.0.0.1:0 "$bin" serve --data-dir "$work/$name-data" \
    --api-addr "127.0.0.1:${port[$name]}" --metrics-addr "127.0.0.1:$metrics" --log warn "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null 2>&1 && return
    sleep 0.05
  done
  cat "$work/$name.log" >&2
  exit 1
}
start open
start sigv4 --auth-credentials "$work/credentials.yaml"
start audited --auth-credentials "$work/credentials.yaml" --audit-log "$work/audit.jsonl" --audit-reads

request='{"NamespaceName":"bench","ServiceName":"inventory","QueryParameters":{"environment":"prod"}}'
# Populates a server through boto3 (signed), or prints the signed headers
# of one DiscoverInstances request as wrk Lua.
cat >"$work/bench.py" <<'PY'
import sys, boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
cmd, port, akid, secret = sys.argv[1:5]
url = f"http://127.0.0.1:{port}/"
if cmd == "populate":
    c = boto3.client("servicediscovery", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id=akid, aws_secret_access_key=secret)
    op = c.create_http_namespace(Name="bench")["OperationId"]
    ns = c.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    svc = c.create_service(Name="inventory", NamespaceId=ns)["Service"]["Id"]
    for i in range(1, int(sys.argv[5]) + 1):
        c.register_instance(ServiceId=svc, InstanceId=f"inventory-{i}", Attributes={
            "AWS_INSTANCE_IPV4": f"10.0.{i // 250}.{i % 250 + 1}", "AWS_INSTANCE_PORT": "8080",
            "environment": "prod", "zone": "us-east-1" + "abc"[i % 3], "version": f"v1.{i % 4}"})
else:
    req = AWSRequest(method="POST", url=url, data=sys.argv[5], headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Route53AutoNaming_v20170314.DiscoverInstances"})
    SigV4Auth(Credentials(akid, secret), "servicediscovery", "us-east-1").add_auth(req)
    for k, v in req.headers.items():
        print(f'wrk.headers["{k}"] = "{v}"')
    print(f'wrk.headers["Host"] = "127.0.0.1:{port}"')
PY
for name in open sigv4 audited; do
  log "populating $name: $instances instances"
  python3 "$work/bench.py" populate "${port[$name]}" "$akid" "$secret" "$instances"
done

lua() { # lua FILE [SIGNED-HEADERS-LUA]
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.1"
wrk.headers["X-Amz-Target"] = "Route53AutoNaming_v20170314.DiscoverInstances"
wrk.body = '$request'
${2:-}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
}
run() { # run NAME CONNECTIONS SECONDS -> "rps p50 p99 requests errors"
  local threads=$((max_threads < $2 ? max_threads : $2)) signed="" server=$1
  # open-signed: the unauthenticated server sent the very same signed
  # request, which it does not check: what the bigger request costs (HTTP
  # parsing, and wrk on the same cores), apart from verifying it.
  [[ $1 == open-signed ]] && server=open
  if [[ $1 != open ]]; then
    signed=$(python3 "$work/bench.py" sign "${port[$server]}" "$akid" "$secret" "$request")
  fi
  lua "$work/$1.lua" "$signed"
  wrk -t"$threads" -c"$2" -d"$3"s --timeout 5s -s "$work/$1.lua" "http://127.0.0.1:${port[$server]}/" |
    awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

# A signed request must succeed (and an unsigned one fail) before anything
# is measured: errors (non-2xx) are counted in every run below too.
signed=$(python3 "$work/bench.py" sign "${port[sigv4]}" "$akid" "$secret" "$request")
check=$(python3 - "$signed" "${port[sigv4]}" "$request" <<'PY'
import json, re, sys, urllib.request, urllib.error
headers = dict(re.findall(r'wrk.headers\["(.+?)"\] = "(.*)"', sys.argv[1]))
url = f"http://127.0.0.1:{sys.argv[2]}/"
req = urllib.request.Request(url, data=sys.argv[3].encode(), headers=headers, method="POST")
n = len(json.load(urllib.request.urlopen(req))["Instances"])
del headers["Authorization"]
try:
    urllib.request.urlopen(urllib.request.Request(url, data=sys.argv[3].encode(), headers=headers, method="POST"))
    print("unsigned request accepted")
except urllib.error.HTTPError as e:
    print(n if e.code == 403 else f"unsigned request got {e.code}")
PY
)
[[ $check == "$instances" ]] || { echo "signed DiscoverInstances check failed: $check" >&2; exit 1; }

rows=()
declare -A rps_of
for c in $connections; do
  for name in open open-signed sigv4 audited; do
    run "$name" "$c" "$warmup" >/dev/null
    read -r rps p50 p99 reqs errs < <(run "$name" "$c" "$duration")
    log "$name c=$c: $rps req/s, p50 $p50 ms, p99 $p99 ms ($reqs requests, $errs errors)"
    rows+=("$name $c $rps $p50 $p99 $errs")
    rps_of[$name-$c]=$rps
  done
done
audit_lines=$(wc -l <"$work/audit.jsonl")

echo
echo "DiscoverInstances, $instances-instance service, QueryParameters environment=prod (all $instances instances)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), ${duration} s per run after ${warmup} s warm-up, up to $max_threads wrk threads on the same cores"
echo
echo "| server | connections | requests/s | p50 ms | p99 ms | errors | vs --auth none |"
echo "|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
  read -r name c rps p50 p99 errs <<<"$r"
  ratio=$(python3 -c "print(f'{(${rps_of[$name-$c]} / ${rps_of[open-$c]} - 1) * 100:+.1f} %')")
  echo "| $name | $c | $rps | $p50 | $p99 | $errs | $ratio |"
done
echo
echo "open: --auth none; open-signed: the same server sent the signed request (its extra headers, not checked);"
echo "sigv4: every request verified and authorized; audited: sigv4 plus one audit line per read ($audit_lines lines written)."
