#!/usr/bin/env bash
# Build the stock CoreDNS binary (every in-tree plugin) from its Go module, for
# the DNS tests (tests/dns_coredns.rs: the documented forward block) and the
# DNS benchmark (scripts/bench-dns.sh: the `file` plugin).
#
# The version is pinned in tests/coredns/go.mod (require github.com/coredns/coredns).
# Output goes to a cache outside the repository, reused while the stamp matches:
#   ${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/coredns/<version>/coredns
#
# Usage: scripts/build-coredns.sh [--force] [--print-bin]
#   --force      rebuild even if the stamp matches
#   --print-bin  print the binary's path on stdout when done (logs go to stderr)
#
# Needs only Go (the module proxy must be reachable on a cold module cache).
set -euo pipefail

# Bump when the build recipe (flags) changes, so caches rebuild.
readonly RECIPE_VERSION=1

log() { printf '[build-coredns] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

force=0
print_bin=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-bin) print_bin=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod_dir="$repo_root/tests/coredns"
version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$mod_dir/go.mod")
[[ -n "$version" ]] || die "cannot find 'require github.com/coredns/coredns <version>' in $mod_dir/go.mod"

cache_root="${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/coredns/$version"
bin="$cache_root/coredns"
stamp_file="$cache_root/.stamp"

want_stamp=$(
  {
    echo "recipe=$RECIPE_VERSION coredns=$version"
    cat "$mod_dir/go.mod" "$mod_dir/go.sum" "$mod_dir/tools.go"
  } | sha256sum | awk '{ print $1 }'
)
up_to_date() { [[ -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; }
finish() { (( print_bin )) && printf '%s\n' "$bin"; exit 0; }

if (( ! force )) && up_to_date; then
  log "up to date: $bin"
  finish
fi
command -v go >/dev/null 2>&1 || die "'go' is not on PATH. Install Go >= 1.25 to build CoreDNS."

mkdir -p "$cache_root"
# Concurrent callers (parallel test binaries) wait for one build.
exec 9>"$cache_root/.build.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another build is running; waiting for $cache_root/.build.lock"
  flock 9
fi
if (( ! force )) && up_to_date; then
  log "up to date (built by a concurrent process): $bin"
  finish
fi

# Reproducible and independent of the caller: static binary, no go.work,
# never rewrite go.mod/go.sum. The version string is what upstream's Makefile
# stamps (GITCOMMIT is left empty).
export CGO_ENABLED=0 GOWORK=off
start=$(date +%s)
log "go: $(go version)"
log "building CoreDNS $version into $bin ..."
rm -f "$stamp_file"
go build -C "$mod_dir" -mod=readonly -trimpath -ldflags="-s -w" \
  -o "$cache_root/.coredns.tmp" github.com/coredns/coredns
mv -f "$cache_root/.coredns.tmp" "$bin"
printf '%s\n' "$want_stamp" >"$stamp_file"
log "done in $(( $(date +%s) - start ))s: $("$bin" -version | head -1)"
finish
