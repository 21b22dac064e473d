#!/usr/bin/env bash
# DNS benchmark: queries/s and latency with dnsperf, Waymark side by side in
# the same run with CoreDNS (`file` plugin) and Knot DNS and NSD serving the
# same records from a zone file. Loopback only, bounded durations.
#
#   scripts/bench-dns.sh                 # 300 services x 4 instances, 15 s per run
#   SERVICES=500 PER=4 DURATION=20 ROUNDS=3 RATE=20000 scripts/bench-dns.sh
#   SERVERS="waymark coredns" scripts/bench-dns.sh   # a subset
#   WAYMARK_BASELINE=/path/to/old/waymark scripts/bench-dns.sh
#                                        # also an older build, in the same rounds
#
# The fixture (benches/dns_fixture.rs) writes a Waymark data directory through
# the registry, the equivalent zone file and a query file (2/3 A, 1/3 SRV over
# all services). The four servers run side by side (idle while not measured):
#   1. throughput: dnsperf with up to $OUTSTANDING queries in flight for
#      $DURATION s, in $ROUNDS rounds taking turns; each server's best round counts;
#   2. latency at a fixed rate: dnsperf -Q $RATE for $DURATION s.
# Results go to stdout as a Markdown table (and to $OUT/results.md), with the
# load average at the start and the end (the machine may be shared) and
# dnsperf's own CPU use in the best throughput round.
#
# Needs: cargo, dnsperf, dig, knotd, nsd (Debian packages, installed when
# missing) and CoreDNS (scripts/build-coredns.sh, cached).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
SERVICES=${SERVICES:-300}
PER=${PER:-4}
DURATION=${DURATION:-15}
RATE=${RATE:-20000}
OUTSTANDING=${OUTSTANDING:-200}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-20}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/waymark-bench-dns.XXXXXX")}
log() { printf '[bench-dns] %s\n' "$*" >&2; }

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dig >/dev/null || need+=(dnsutils)
command -v knotd >/dev/null || need+=(knot)
command -v nsd >/dev/null || need+=(nsd)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's knot and nsd packages start system services on port 53; this
# benchmark runs its own instances on free ports and leaves those alone.

log "building waymark (release) and CoreDNS"
cargo build --release --quiet --bin waymark
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
waymark_bin="$target_dir/release/waymark"
coredns_bin=$(scripts/build-coredns.sh --print-bin)

log "writing the fixture ($SERVICES services x $PER instances) into $OUT"
cargo bench --quiet --bench dns_fixture -- "$OUT" "$SERVICES" "$PER" >&2
zone_file="$OUT/db.bench.local"
queries="$OUT/queries.txt"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_dns() { # port
  local i
  for i in $(seq 1 100); do
    if dig @127.0.0.1 -p "$1" +tries=1 +time=1 +short svc-0000.bench.local A >/dev/null 2>&1 &&
       [[ -n "$(dig @127.0.0.1 -p "$1" +tries=1 +time=1 +short svc-0000.bench.local A)" ]]; then
      return 0
    fi
    sleep 0.1
  done
  log "server on port $1 did not answer"; return 1
}

start_server() { # name port -> sets server_pid
  local name=$1 port=$2 dir="$OUT/$1"
  mkdir -p "$dir"
  case "$name" in
    waymark)
      "$waymark_bin" serve --data-dir "$OUT/data" --dns-addr "127.0.0.1:$port" \
        --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --log warn 2>"$dir/log" &
      ;;
    baseline)
      # Another Waymark build on its own copy of the data directory (a data
      # directory is used by one process at a time).
      cp -r "$OUT/data" "$OUT/data-baseline"
      "$WAYMARK_BASELINE" serve --data-dir "$OUT/data-baseline" --dns-addr "127.0.0.1:$port" \
        --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --log warn 2>"$dir/log" &
      ;;
    coredns)
      printf 'bench.local:%s {\n    file %s\n}\n' "$port" "$zone_file" >"$dir/Corefile"
      (cd "$dir" && exec "$coredns_bin" -conf Corefile -quiet) >"$dir/log" 2>&1 &
      ;;
    knot)
      cat >"$dir/knot.conf" <<EOF
server:
    rundir: "$dir"
    listen: 127.0.0.1@$port
    udp-workers: 2
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$dir"
log:
  - target: stderr
    any: warning
zone:
  - domain: bench.local
    storage: "$OUT"
    file: "db.bench.local"
    journal-content: none
    zonefile-sync: -1
EOF
      knotd -c "$dir/knot.conf" 2>"$dir/log" &
      ;;
    nsd)
      cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$port
    server-count: 2
    username: ""
    chroot: ""
    zonesdir: "$OUT"
    pidfile: "$dir/nsd.pid"
    xfrdfile: "$dir/xfrd.state"
    zonelistfile: "$dir/zone.list"
    database: ""
    verbosity: 0
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: bench.local
    zonefile: db.bench.local
EOF
      nsd -d -c "$dir/nsd.conf" 2>"$dir/log" &
      ;;
  esac
  server_pid=$!
  pids+=("$server_pid")
}

# dnsperf's summary -> "qps avg_ms stddev_ms lost_pct client_cpu_pct": the
# last is dnsperf's own CPU time over the run's wall time (100 = one core).
# dnsperf runs one thread (-T 1): near 100 % the client, not the server, is
# what limits the figure.
run_dnsperf() { # port extra-args...
  local port=$1; shift
  local TIMEFORMAT='client-cpu %U %S %R'
  { time dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -c "$CLIENTS" -T 1 -l "$DURATION" "$@" 2>&1; } 2>&1 |
    awk '
      /Queries sent:/ {sent=$3}
      /Queries lost:/ {lost=$3}
      /Queries per second:/ {qps=$4}
      /Average Latency/ {avg=$4}
      /Latency StdDev/ {sd=$4}
      /^client-cpu / {cpu=($4 > 0 ? 100*($2+$3)/$4 : 0)}
      END {printf "%.0f %.3f %.3f %.2f %.0f\n", qps, avg*1000, sd*1000, (sent ? 100*lost/sent : 0), cpu}'
}

answers() { # port qname qtype -> sorted answer data
  dig @127.0.0.1 -p "$1" +norec +tries=1 +time=2 +noall +answer "$2" "$3" | awk '{ $1=$2=$3=""; print }' | sort
}

declare -A result_tp result_lat port_of
read -r -a servers <<<"${SERVERS:-waymark coredns knot nsd}"
if [[ -n "${WAYMARK_BASELINE:-}" ]]; then
  read -r -a servers <<<"${servers[*]/waymark/waymark baseline}"
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
loads=()
rounds_raw=()
reference=""
# All four run at once on their own ports (idle ones use no CPU); the
# measurements take turns, in $ROUNDS rounds, and each server's best round
# counts, so a burst of unrelated load on the machine cannot decide a result.
for name in "${servers[@]}"; do
  port=$(free_port)
  port_of[$name]=$port
  log "starting $name on 127.0.0.1:$port"
  start_server "$name" "$port"
  wait_dns "$port"
  # Same records: every server gives the same answer sets.
  got="$(answers "$port" svc-0042.bench.local A; answers "$port" svc-0042.bench.local SRV)"
  if [[ -z "$reference" ]]; then reference=$got
  elif [[ "$got" != "$reference" ]]; then
    log "WARNING: $name answers differ from waymark's:"; diff <(echo "$reference") <(echo "$got") >&2 || true
  fi
  dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -c "$CLIENTS" -T 1 -l 2 -q "$OUTSTANDING" >/dev/null 2>&1 || true
done
for round in $(seq 1 "$ROUNDS"); do
  for name in "${servers[@]}"; do
    log "round $round/$ROUNDS, $name: throughput, $DURATION s, $OUTSTANDING outstanding"
    r=$(run_dnsperf "${port_of[$name]}" -q "$OUTSTANDING")
    load=$(cut -d' ' -f1 /proc/loadavg)
    loads+=("$load")
    log "$name: $r (qps avg_ms sd_ms lost_% client_cpu_%; load $load)"
    rounds_raw+=("$name $r")
    read -r qps _ <<<"$r"
    read -r best _ <<<"${result_tp[$name]:-0}"
    if (( qps > best )); then result_tp[$name]=$r; fi
  done
done
for name in "${servers[@]}"; do
  log "$name: latency at $RATE qps, $DURATION s"
  result_lat[$name]=$(run_dnsperf "${port_of[$name]}" -q "$OUTSTANDING" -Q "$RATE")
  log "$name: ${result_lat[$name]}"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "DNS benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU ($cpu), loopback, dnsperf on the same machine"
  echo "($SERVICES services x $PER instances, SRV+A; queries 2/3 A, 1/3 SRV; $CLIENTS clients; throughput: best of $ROUNDS rounds of $DURATION s)"
  echo "load average (1/5/15 min): $load_start at the start, $load_end at the end;" \
    "1 min after each throughput round: $(printf '%s\n' "${loads[@]}" | sort -n | sed -n '1p;$p' | paste -sd-)"
  echo
  echo "| server | max queries/s | avg latency (ms) | stddev (ms) | lost | dnsperf CPU | latency at $RATE qps (ms, avg ± sd) | lost |"
  echo "|---|---|---|---|---|---|---|---|"
  for name in "${servers[@]}"; do
    read -r qps avg sd lost client <<<"${result_tp[$name]}"
    read -r qps2 avg2 sd2 lost2 _ <<<"${result_lat[$name]}"
    echo "| $name | $qps | $avg | $sd | $lost % | $client % | $avg2 ± $sd2 (at $qps2 qps) | $lost2 % |"
  done
  echo
  read -r w _ <<<"${result_tp[waymark]:-0}"
  for name in "${servers[@]}"; do
    [[ $name == waymark ]] && continue
    read -r other _ <<<"${result_tp[$name]}"
    awk -v w="$w" -v o="$other" -v n="$name" 'BEGIN { if (o > 0 && w > 0) printf "waymark / %s: %.2fx\n", n, w / o }'
  done
  echo
  echo "versions: $("$coredns_bin" -version | head -1), $(knotd -V 2>&1 | head -1), $(nsd -v 2>&1 | head -1), $(dnsperf -h 2>&1 | grep -m1 Version)"
} | tee "$OUT/results.md"
log "results: $OUT/results.md"

# Raw results, for scripts/plot-benches.sh: every round's figures per server.
results=${WAYMARK_BENCH_RESULTS:-${CARGO_TARGET_DIR:-$repo/target}/bench-results}
mkdir -p "$results"
{
  for name in "${servers[@]}"; do
    echo "best $name ${result_tp[$name]}"
    echo "paced $name ${result_lat[$name]}"
  done
  printf 'round %s\n' "${rounds_raw[@]}"
} | python3 -c '
import json, sys, time
servers = {}
for line in sys.stdin:
    kind, name, *f = line.split()
    s = servers.setdefault(name, {"server": name, "rounds_qps": []})
    qps, avg, sd, lost = float(f[0]), float(f[1]), float(f[2]), float(f[3])
    if kind == "best":
        s.update(max_qps=qps, avg_ms=avg, sd_ms=sd, lost_pct=lost)
    elif kind == "paced":
        s.update(paced_qps=qps, paced_avg_ms=avg, paced_sd_ms=sd, paced_lost_pct=lost)
    else:
        s["rounds_qps"].append(qps)
json.dump({"bench": "dns", "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
           "machine": sys.argv[1], "data": {"servers": list(servers.values())}},
          open(sys.argv[2], "w"), indent=2)
print("raw results: " + sys.argv[2])
' "$(nproc) vCPU ($cpu)" "$results/dns.json"
