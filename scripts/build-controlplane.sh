#!/usr/bin/env bash
# Build the loopback test control plane binaries from Go source:
#   kube-apiserver, kube-controller-manager  <- k8s.io/kubernetes (tests/controlplane/go.mod)
#   etcd                                     <- go.etcd.io/etcd/server/v3 (tests/controlplane/etcd/go.mod)
#   kubectl (only if none is on PATH)        <- k8s.io/kubernetes/cmd/kubectl
#
# Output goes to a cache directory outside the repository so a machine builds
# them once:  ${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/controlplane/<k8s version>/bin/
# A stamp file holds a hash of the module files and of this recipe; when it
# matches and all binaries exist, the script exits immediately.
#
# Usage: scripts/build-controlplane.sh [--force] [--print-bin-dir]
#   --force          rebuild even if the stamp matches
#   --print-bin-dir  print the bin directory on stdout when done (logs go to stderr)
#
# Needs only Go (the module proxy must be reachable on a cold module cache).
set -euo pipefail

# Bump when the build recipe (flags, package list) changes, so caches rebuild.
readonly RECIPE_VERSION=1

log() { printf '[build-controlplane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

force=0
print_bin_dir=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-bin-dir) print_bin_dir=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
k8s_mod_dir="$repo_root/tests/controlplane"
etcd_mod_dir="$repo_root/tests/controlplane/etcd"

# Single source of truth for versions: the go.mod files.
k8s_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$k8s_mod_dir/go.mod")
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 }' "$etcd_mod_dir/go.mod")
[[ -n "$k8s_version" ]] || die "cannot find 'require k8s.io/kubernetes <version>' in $k8s_mod_dir/go.mod"
[[ -n "$etcd_version" ]] || die "cannot find 'require go.etcd.io/etcd/server/v3 <version>' in $etcd_mod_dir/go.mod"

cache_root="${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/controlplane/$k8s_version"
bin_dir="$cache_root/bin"
stamp_file="$bin_dir/.stamp"

# kubectl is only built when the machine has none; a kubectl we built earlier
# (in bin_dir) does not count as "on PATH", so it stays up to date with the stamp.
need_kubectl=0
if ! PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$bin_dir" | paste -sd: -) command -v kubectl >/dev/null 2>&1; then
  need_kubectl=1
fi

binaries=(kube-apiserver kube-controller-manager etcd)
(( need_kubectl )) && binaries+=(kubectl)

# Hash of everything that determines the build output (except the Go toolchain,
# which we deliberately ignore: a Go upgrade should not force a 15 minute rebuild).
compute_stamp() {
  {
    echo "recipe=$RECIPE_VERSION k8s=$k8s_version etcd=$etcd_version"
    cat "$k8s_mod_dir/go.mod" "$k8s_mod_dir/go.sum" "$k8s_mod_dir/tools.go" \
        "$etcd_mod_dir/go.mod" "$etcd_mod_dir/go.sum" "$etcd_mod_dir/tools.go"
  } | sha256sum | awk '{ print $1 }'
}

up_to_date() {
  [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]] || return 1
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
  return 0
}

finish() {
  (( print_bin_dir )) && printf '%s\n' "$bin_dir"
  exit 0
}

want_stamp=$(compute_stamp)
if (( ! force )) && up_to_date; then
  log "up to date: $bin_dir (k8s $k8s_version, etcd $etcd_version)"
  finish
fi

command -v go >/dev/null 2>&1 || die "'go' is not on PATH. Install Go >= 1.24 (https://go.dev/dl/) to build the test control plane."

mkdir -p "$bin_dir"
# Several `controlplane.sh up` may run at once (parallel tests): serialise builds
# with a lock, and re-check after acquiring it because another process may have
# finished the build while we waited.
exec 9>"$cache_root/.build.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another build is running; waiting for the lock $cache_root/.build.lock"
  flock 9
fi
if (( ! force )) && up_to_date; then
  log "up to date (built by a concurrent process): $bin_dir"
  finish
fi

# Keep the build reproducible and independent of the caller's environment:
# no cgo (static binaries, like upstream release builds), no go.work from a
# parent directory, never rewrite go.mod/go.sum.
export CGO_ENABLED=0 GOWORK=off

# Version stamping, as hack/lib/version.sh does for release builds, so that
# /version and `kubectl version` report v1.33.x instead of v0.0.0-master.
k8s_minor=$(printf '%s' "$k8s_version" | cut -d. -f2)
build_date=$(date -u +'%Y-%m-%dT%H:%M:%SZ')
k8s_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

# build <module dir> <binary name> <package> <ldflags>
# Writes to a temporary name and renames, so a reader never sees a half-written binary.
build() {
  local dir=$1 name=$2 pkg=$3 ldflags=$4 start
  start=$(date +%s)
  log "  go build $pkg ..."
  go build -C "$dir" -mod=readonly -trimpath -ldflags="$ldflags" -o "$bin_dir/.$name.tmp" "$pkg"
  mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
  log "  $name: $(( $(date +%s) - start ))s, $(du -h "$bin_dir/$name" | cut -f1)"
}

# With a matching stamp only missing binaries are built (e.g. kubectl after it
# disappeared from PATH); otherwise everything is rebuilt.
rebuild_all=0
if (( force )) || [[ ! -f "$stamp_file" || "$(cat "$stamp_file")" != "$want_stamp" ]]; then
  rebuild_all=1
  rm -f "$stamp_file"
  # A kubectl built for an older stamp is stale; drop it if none is needed now.
  (( need_kubectl )) || rm -f "$bin_dir/kubectl"
fi
to_build=()
for b in "${binaries[@]}"; do
  if (( rebuild_all )) || [[ ! -x "$bin_dir/$b" ]]; then to_build+=("$b"); fi
done

log "go: $(go version)"
log "building k8s $k8s_version and etcd $etcd_version into $bin_dir: ${to_build[*]}"
total_start=$(date +%s)
for b in "${to_build[@]}"; do
  case "$b" in
    etcd) build "$etcd_mod_dir" etcd go.etcd.io/etcd/server/v3 "-s -w" ;;
    *) build "$k8s_mod_dir" "$b" "k8s.io/kubernetes/cmd/$b" "$k8s_ldflags" ;;
  esac
done
printf '%s\n' "$want_stamp" >"$stamp_file"

log "done in $(( $(date +%s) - total_start ))s"
finish
