#!/usr/bin/env bash
# Regenerate every generated file in the repository from its source of truth.
#   crds/waymark.dev.yaml                 <- `waymark crds` (the Rust types in src/crd/)
#   charts/waymark/crds/waymark.dev.yaml  <- a copy of crds/waymark.dev.yaml (helm installs it)
#   manifests/waymark.yaml                <- scripts/render-manifests.sh (helm template of the chart)
# tests/crds.rs and tests/helm.rs fail when a generated file is stale: run this script and
# commit the result. Helm is built from its Go module the first time (scripts/build-helm.sh,
# cached in ~/.cache/waymark/helm/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each file is written to a temporary file first and moved into place, so a failed step
# never leaves a truncated file behind.
tmp=()
trap 'rm -f "${tmp[@]}"' EXIT
write() { # write DEST CMD...: run CMD, its stdout becomes DEST
  local dest=$1 t
  shift
  t=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")
  tmp+=("$t")
  "$@" >"$t"
  chmod 644 "$t"
  mv -f "$t" "$dest"
  echo "generated $dest" >&2
}

write crds/waymark.dev.yaml cargo run --quiet -- crds
mkdir -p charts/waymark/crds manifests
write charts/waymark/crds/waymark.dev.yaml cat crds/waymark.dev.yaml
helm=$(scripts/build-helm.sh --print-bin)
write manifests/waymark.yaml scripts/render-manifests.sh "$helm"
