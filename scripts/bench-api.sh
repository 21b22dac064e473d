#!/usr/bin/env bash
# DiscoverInstances benchmark: Waymark's Cloud Map API against nginx serving
# the identical response body from a file (the ceiling of this machine for an
# HTTP/1.1 server answering a ~20 KB body), side by side in one run.
#
#   scripts/bench-api.sh
#
# What it does (loopback only, every run bounded in time):
#   1. builds `waymark` in release mode and starts `waymark serve` on free
#      loopback ports with a temporary data directory;
#   2. creates an HTTP namespace `bench` and a service `inventory` with 100
#      instances (IPv4, port, environment=prod, zone, version) through the API;
#   3. saves the DiscoverInstances response for
#      QueryParameters={"environment": "prod"} (all 100 instances) to a file
#      and starts nginx (its own temporary config) serving that file for any
#      POST on another loopback port;
#   4. for each connection count: a warm-up, then a fixed-duration wrk run
#      against Waymark and against nginx with the same Lua script (POST, the
#      JSON body, X-Amz-Target), reporting requests/s and p50/p99 latency;
#   5. "half load": wrk with a fixed per-connection pacing (Lua delay(), as
#      wrk2 is not packaged in Debian) at about half of Waymark's best rate,
#      against both servers, reporting p99 there.
#
# Environment knobs:
#   BENCH_DURATION=10          seconds per measured run
#   BENCH_WARMUP=2             seconds of warm-up before each measured run
#   BENCH_CONNECTIONS="8 32 128"
#   BENCH_THREADS=2            wrk threads (at most the connection count)
#   CARGO_TARGET_DIR           where the release build goes (cargo's default)
#
# Installs wrk, nginx and curl from Debian when missing. Needs python3.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
connections=${BENCH_CONNECTIONS:-"8 32 128"}
max_threads=${BENCH_THREADS:-2}
instances=100
log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

log "building waymark (release)"
cargo build --release --quiet --bin waymark
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=$target_dir/release/waymark

# --- servers ---------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/waymark-bench-api.XXXXXX")
waymark_pid=""
nginx_pid=""
cleanup() {
  [[ -n $waymark_pid ]] && kill "$waymark_pid" 2>/dev/null && wait "$waymark_pid" 2>/dev/null
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
metrics_port=$(free_port)
nginx_port=$(free_port)
api=http://127.0.0.1:$api_port/
ngx=http://127.0.0.1:$nginx_port/

log "starting waymark serve (API 127.0.0.1:$api_port)"
WAYMARK_DNS_ADDR=127.0.0.1:0 "$bin" serve --data-dir "$work/data" \
  --api-addr "127.0.0.1:$api_port" --metrics-addr "127.0.0.1:$metrics_port" \
  >"$work/waymark.log" 2>&1 &
waymark_pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$waymark_pid" 2>/dev/null || { cat "$work/waymark.log" >&2; exit 1; }
  sleep 0.05
done

call() {
  curl -sS --fail-with-body -X POST "$api" \
    -H 'Content-Type: application/x-amz-json-1.1' \
    -H "X-Amz-Target: Route53AutoNaming_v20170314.$1" --data-binary "$2"
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

log "creating namespace bench and service inventory with $instances instances"
op=$(call CreateHttpNamespace '{"Name":"bench"}' | json '["OperationId"]')
ns=$(call GetOperation "{\"OperationId\":\"$op\"}" | json '["Operation"]["Targets"]["NAMESPACE"]')
svc=$(call CreateService "{\"Name\":\"inventory\",\"NamespaceId\":\"$ns\"}" | json '["Service"]["Id"]')
zones=(a b c)
for i in $(seq 1 "$instances"); do
  call RegisterInstance "{\"ServiceId\":\"$svc\",\"InstanceId\":\"inventory-$i\",\"Attributes\":{
    \"AWS_INSTANCE_IPV4\":\"10.0.$((i / 250)).$((i % 250 + 1))\",\"AWS_INSTANCE_PORT\":\"8080\",
    \"environment\":\"prod\",\"zone\":\"us-east-1${zones[i % 3]}\",\"version\":\"v1.$((i % 4))\"}}" >/dev/null
done

request='{"NamespaceName":"bench","ServiceName":"inventory","QueryParameters":{"environment":"prod"}}'
mkdir -p "$work/www" "$work/nginx-tmp"
call DiscoverInstances "$request" >"$work/www/response.json"
count=$(json '["Instances"].__len__()' <"$work/www/response.json")
[[ $count == "$instances" ]] || { echo "DiscoverInstances returned $count instances, not $instances" >&2; exit 1; }
body_bytes=$(wc -c <"$work/www/response.json")
log "response: $count instances, $body_bytes bytes"

# nginx: same body for any POST (static files answer POST with 405, which
# error_page turns into a 200 with the file, as a GET).
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/response.json"
cat >"$work/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx-tmp/body;
  proxy_temp_path $work/nginx-tmp/proxy;
  fastcgi_temp_path $work/nginx-tmp/fastcgi;
  uwsgi_temp_path $work/nginx-tmp/uwsgi;
  scgi_temp_path $work/nginx-tmp/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    location / {
      default_type application/x-amz-json-1.1;
      try_files /response.json =404;
      error_page 405 =200 /response.json;
    }
  }
}
EOF
log "starting nginx (127.0.0.1:$nginx_port, $(nproc) workers)"
"$nginx_bin" -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
nginx_pid=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null -X POST "$ngx" --data-binary "$request" && break
  sleep 0.05
done
ngx_bytes=$(curl -sf -X POST "$ngx" -H 'Content-Type: application/x-amz-json-1.1' \
  -H 'X-Amz-Target: Route53AutoNaming_v20170314.DiscoverInstances' --data-binary "$request" | wc -c)
[[ $ngx_bytes == "$body_bytes" ]] || { echo "nginx serves $ngx_bytes bytes, not $body_bytes" >&2; exit 1; }

# --- wrk -------------------------------------------------------------------
lua() { # lua FILE [DELAY_MS]
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.1"
wrk.headers["X-Amz-Target"] = "Route53AutoNaming_v20170314.DiscoverInstances"
wrk.body = '$request'
${2:+function delay() return $2 end}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
  -- The latency distribution, for the plots (scripts/plot-benches.sh).
  io.write("PCTL")
  for _, p in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9, 99.99}) do
    io.write(string.format(" %g:%.4f", p, latency:percentile(p) / 1000))
  end
  io.write("\n")
end
EOF
}
lua "$work/max.lua"

# run URL CONNECTIONS SECONDS SCRIPT -> "rps p50_ms p99_ms requests errors"
# (wrk's whole output is kept in $work/last.out.)
run() {
  local threads=$((max_threads < $2 ? max_threads : $2))
  wrk -t"$threads" -c"$2" -d"$3"s --timeout 5s -s "$4" "$1" | tee "$work/last.out" |
    awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

rows=()
best=0
for c in $connections; do
  for target in waymark nginx; do
    url=$api
    [[ $target == nginx ]] && url=$ngx
    run "$url" "$c" "$warmup" "$work/max.lua" >/dev/null
    read -r rps p50 p99 reqs errs < <(run "$url" "$c" "$duration" "$work/max.lua")
    cp "$work/last.out" "$work/raw-$target-$c.out"
    log "$target c=$c: $rps req/s, p50 $p50 ms, p99 $p99 ms ($reqs requests, $errs errors)"
    rows+=("$target $c $rps $p50 $p99 $errs")
    if [[ $target == waymark ]]; then
      w_rps[$c]=$rps
      if ((rps > best)); then best=$rps; fi
    else
      n_rps[$c]=$rps
    fi
  done
done

# Half load: each connection sends one request, waits for the answer, then
# waits 1 ms (wrk's Lua delay(); its timers are coarse, so a short pilot run
# measures the rate paced connections achieve, twice) and the connection
# count is chosen for about half of Waymark's best rate.
half=$((best / 2))
lua "$work/half.lua" 1
read -r pilot _ < <(run "$api" 16 2 "$work/half.lua")
half_c=$(python3 -c "print(max(1, round($half / ($pilot / 16))))")
# Once more at that count: more connections also mean more contention.
read -r pilot _ < <(run "$api" "$half_c" 2 "$work/half.lua")
half_c=$(python3 -c "print(max(1, round($half_c * $half / $pilot)))")
half_rows=()
for target in waymark nginx; do
  url=$api
  [[ $target == nginx ]] && url=$ngx
  run "$url" "$half_c" "$warmup" "$work/half.lua" >/dev/null
  read -r rps p50 p99 reqs errs < <(run "$url" "$half_c" "$duration" "$work/half.lua")
  log "$target half load (c=$half_c paced): $rps req/s, p50 $p50 ms, p99 $p99 ms ($errs errors)"
  half_rows+=("$target $half_c $rps $p50 $p99 $errs")
done

# --- report ----------------------------------------------------------------
echo
echo "DiscoverInstances, $instances-instance service, QueryParameters environment=prod ($count instances, $body_bytes-byte body)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), ${duration} s per run after ${warmup} s warm-up, up to $max_threads wrk threads on the same cores; nginx $("$nginx_bin" -v 2>&1 | cut -d/ -f2), $(nproc) workers"
echo
echo "| server | connections | requests/s | p50 ms | p99 ms | errors | waymark / nginx |"
echo "|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
  read -r target c rps p50 p99 errs <<<"$r"
  ratio=""
  [[ $target == waymark ]] && ratio=$(python3 -c "print(f'{${w_rps[$c]}/${n_rps[$c]}:.2f}')")
  echo "| $target | $c | $rps | $p50 | $p99 | $errs | $ratio |"
done
echo
echo "Half load (target: half of Waymark's best, $half req/s; wrk paced with 1 ms between a response and the next request on each of $half_c connections):"
echo
echo "| server | connections | requests/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
for r in "${half_rows[@]}"; do
  read -r target c rps p50 p99 errs <<<"$r"
  echo "| $target | $c | $rps | $p50 | $p99 | $errs |"
done

# --- raw results, for scripts/plot-benches.sh -------------------------------
results=${WAYMARK_BENCH_RESULTS:-${CARGO_TARGET_DIR:-$repo/target}/bench-results}
mkdir -p "$results"
python3 - "$work" "$results/api.json" "$(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" <<'PY'
import glob, json, os, sys, time
work, out, machine = sys.argv[1:4]
runs = []
for path in sorted(glob.glob(os.path.join(work, "raw-*.out"))):
    server, connections = os.path.basename(path)[4:-4].rsplit("-", 1)
    run = {"server": server, "connections": int(connections)}
    for line in open(path):
        f = line.split()
        if f and f[0] == "RESULT":
            run.update(rps=float(f[1]), p50_ms=float(f[2]), p99_ms=float(f[3]),
                       requests=int(f[4]), errors=int(f[5]))
        elif f and f[0] == "PCTL":
            run["percentiles_ms"] = {p: float(v) for p, v in (x.split(":") for x in f[1:])}
    runs.append(run)
with open(out, "w") as f:
    json.dump({"bench": "api", "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
               "machine": machine, "data": {"runs": runs}}, f, indent=2)
print(f"raw results: {out}")
PY
