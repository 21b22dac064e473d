#!/usr/bin/env bash
# Regenerate every generated file in the repository from its source of truth.
#   crds/waymark.dev.yaml  <- `waymark crds` (the Rust types in src/crd/)
# tests/crds.rs fails when a generated file is stale: run this script and commit the result.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Write to a temporary file first, so a failed build never leaves a truncated file behind.
tmp=$(mktemp crds/.waymark.dev.yaml.XXXXXX)
trap 'rm -f "$tmp"' EXIT
cargo run --quiet -- crds >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" crds/waymark.dev.yaml
trap - EXIT
echo "generated crds/waymark.dev.yaml" >&2
