#!/usr/bin/env bash
# Build the proxyless gRPC xDS client of the xDS tests (tests/xds.rs): a small
# program on grpc-go's own xDS resolver and balancers (tests/xds_client/), which
# also runs the loopback gRPC backends it routes to.
#
# grpc-go's version is pinned in tests/xds_client/go.mod (require google.golang.org/grpc).
# Output goes to a cache outside the repository, reused while the stamp matches:
#   ${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/xds-client/<grpc version>/xds-client
#
# Usage: scripts/build-xds-client.sh [--force] [--print-bin]
#   --force      rebuild even if the stamp matches
#   --print-bin  print the binary's path on stdout when done (logs go to stderr)
#
# Needs only Go >= 1.26 (the module proxy must be reachable on a cold module cache).
set -euo pipefail

# Bump when the build recipe (flags) changes, so caches rebuild.
readonly RECIPE_VERSION=1

log() { printf '[build-xds-client] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

force=0
print_bin=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-bin) print_bin=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod_dir="$repo_root/tests/xds_client"
version=$(awk '$1 == "require" && $2 == "google.golang.org/grpc" { print $3 }' "$mod_dir/go.mod")
[[ -n "$version" ]] || die "cannot find 'require google.golang.org/grpc <version>' in $mod_dir/go.mod"

cache_root="${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/xds-client/$version"
bin="$cache_root/xds-client"
stamp_file="$cache_root/.stamp"

# The program's source is part of the stamp: editing it rebuilds.
want_stamp=$(
  {
    echo "recipe=$RECIPE_VERSION grpc=$version"
    cat "$mod_dir/go.mod" "$mod_dir/go.sum" "$mod_dir"/*.go
  } | sha256sum | awk '{ print $1 }'
)
up_to_date() { [[ -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; }
finish() { (( print_bin )) && printf '%s\n' "$bin"; exit 0; }

if (( ! force )) && up_to_date; then
  log "up to date: $bin"
  finish
fi
command -v go >/dev/null 2>&1 || die "'go' is not on PATH. Install Go >= 1.26 to build the xDS test client."

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

# Independent of the caller: static binary, no go.work, never rewrite go.mod/go.sum.
export CGO_ENABLED=0 GOWORK=off
start=$(date +%s)
log "go: $(go version)"
log "building the xDS client (grpc-go $version) into $bin ..."
rm -f "$stamp_file"
go build -C "$mod_dir" -mod=readonly -trimpath -ldflags="-s -w" -o "$cache_root/.xds-client.tmp" .
mv -f "$cache_root/.xds-client.tmp" "$bin"
printf '%s\n' "$want_stamp" >"$stamp_file"
log "done in $(( $(date +%s) - start ))s"
finish
