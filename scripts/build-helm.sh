#!/usr/bin/env bash
# Build the Helm CLI (helm.sh/helm/v3/cmd/helm) from its Go module, for the
# chart tests (tests/helm.rs: lint, template, install, RBAC) and for
# scripts/generate.sh (manifests/ is rendered from charts/waymark).
#
# The version is pinned in tests/helm/go.mod (require helm.sh/helm/v3).
# Output goes to a cache outside the repository, reused while the stamp matches:
#   ${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/helm/<version>/helm
#
# Usage: scripts/build-helm.sh [--force] [--print-bin]
#   --force      rebuild even if the stamp matches
#   --print-bin  print the binary's path on stdout when done (logs go to stderr)
#
# Needs only Go >= 1.26 (the module proxy must be reachable on a cold module cache).
set -euo pipefail

# Bump when the build recipe (flags) changes, so caches rebuild.
readonly RECIPE_VERSION=1

log() { printf '[build-helm] %s\n' "$*" >&2; }
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
mod_dir="$repo_root/tests/helm"
version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3 }' "$mod_dir/go.mod")
[[ -n "$version" ]] || die "cannot find 'require helm.sh/helm/v3 <version>' in $mod_dir/go.mod"

cache_root="${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}/helm/$version"
bin="$cache_root/helm"
stamp_file="$cache_root/.stamp"

want_stamp=$(
  {
    echo "recipe=$RECIPE_VERSION helm=$version"
    cat "$mod_dir/go.mod" "$mod_dir/go.sum" "$mod_dir/tools.go"
  } | sha256sum | awk '{ print $1 }'
)
up_to_date() { [[ -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; }
finish() { (( print_bin )) && printf '%s\n' "$bin"; exit 0; }

if (( ! force )) && up_to_date; then
  log "up to date: $bin"
  finish
fi
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "'go' is not on PATH. Install Go >= 1.26 to build Helm."

mkdir -p "$cache_root"
# Concurrent callers (parallel test binaries, generate.sh) wait for one build.
exec 9>"$cache_root/.build.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another build is running; waiting for $cache_root/.build.lock"
  flock 9
fi
if (( ! force )) && up_to_date; then
  log "up to date (built by a concurrent process): $bin"
  finish
fi

# Reproducible and independent of the caller: static binary, no go.work, never
# rewrite go.mod/go.sum. The -X flags are those of upstream's Makefile: the
# version `helm version` prints, and the Kubernetes version (from the client-go
# Helm is built with) that `helm lint`/`helm template` assume without a cluster.
export CGO_ENABLED=0 GOWORK=off
k8s_version=$(go list -C "$mod_dir" -mod=readonly -m -f '{{.Version}}' k8s.io/client-go)
[[ "$k8s_version" =~ ^v0\.([0-9]+)\. ]] || die "unexpected k8s.io/client-go version: $k8s_version"
k8s_minor=${BASH_REMATCH[1]}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

start=$(date +%s)
log "go: $(go version)"
log "building Helm $version (Kubernetes 1.$k8s_minor client) into $bin ..."
rm -f "$stamp_file"
go build -C "$mod_dir" -mod=readonly -trimpath -ldflags="$ldflags" \
  -o "$cache_root/.helm.tmp" helm.sh/helm/v3/cmd/helm
mv -f "$cache_root/.helm.tmp" "$bin"
printf '%s\n' "$want_stamp" >"$stamp_file"
log "done in $(( $(date +%s) - start ))s: $("$bin" version --short)"
finish
