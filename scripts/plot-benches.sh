#!/usr/bin/env bash
# Renders the benches' raw results as PNG plots (scripts/plot_benches.py).
#
#   scripts/plot-benches.sh [RESULTS_DIR [OUT_DIR]]
#       RESULTS_DIR: what the benches wrote (default $WAYMARK_BENCH_RESULTS, or
#                    ${CARGO_TARGET_DIR:-target}/bench-results); OUT_DIR: docs/img
#   scripts/plot-benches.sh --check
#       a small real bench run (the restore bench, two sizes, dev profile)
#       rendered into a temporary directory; fails unless every plot is a
#       non-empty PNG (scripts/test.sh runs this)
#
# matplotlib comes from PyPI into a virtualenv cached outside the repository
# (${WAYMARK_CACHE_DIR:-~/.cache/waymark}/plot-venv), made when missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}
venv=$cache/plot-venv
log() { printf '[plot] %s\n' "$*" >&2; }

python=$venv/bin/python
if ! "$python" -c 'import matplotlib' 2>/dev/null; then
  log "making $venv with matplotlib (PyPI)"
  if python3 -m venv "$venv" 2>/dev/null; then
    "$python" -m pip install --quiet matplotlib==3.11.2
  else
    # No venv module (Debian without python3-venv): a target directory.
    log "no venv module: installing into $cache/plot-pylib"
    python3 -m pip install --quiet --target "$cache/plot-pylib" matplotlib==3.11.2
    python=python3
  fi
fi
if [[ $python == python3 || ! -x $python ]]; then
  python=python3
  export PYTHONPATH=$cache/plot-pylib${PYTHONPATH:+:$PYTHONPATH}
fi

if [[ ${1:-} == --check ]]; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/waymark-plot-check.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  log "a small restore bench run (dev profile) into $tmp"
  WAYMARK_BENCH_RESULTS=$tmp/results WAYMARK_BENCH_INSTANCES=2000,6000 \
    cargo bench --quiet --profile dev --bench restore >"$tmp/bench.log"
  "$python" scripts/plot_benches.py "$tmp/results" "$tmp/img" >"$tmp/written"
  [[ -s $tmp/written ]] || { echo "no plot written" >&2; exit 1; }
  while read -r png; do
    size=$(stat -c %s "$png")
    # PNG signature, and more than an empty canvas.
    if [[ $(head -c 8 "$png" | od -An -tx1 | tr -d ' \n') != 89504e470d0a1a0a ]] || ((size < 10000)); then
      echo "$png is not a plot ($size bytes)" >&2
      exit 1
    fi
    log "ok: $(basename "$png") ($size bytes)"
  done <"$tmp/written"
  exit 0
fi

results=${1:-${WAYMARK_BENCH_RESULTS:-${CARGO_TARGET_DIR:-$repo/target}/bench-results}}
out=${2:-$repo/docs/img}
"$python" scripts/plot_benches.py "$results" "$out"
