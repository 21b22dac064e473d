#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing,
# builds (or reuses) the Go-built control plane, checks formatting and lints,
# then runs every Rust test against one shared loopback control plane.
#
#   scripts/test.sh [extra cargo test args]
#
# Heavy builds are cached outside the repository and reused:
#   ${WAYMARK_CACHE_DIR:-~/.cache/waymark}/controlplane/  kube-apiserver, etcd, ...
#   ${WAYMARK_CACHE_DIR:-~/.cache/waymark}/coredns/, helm/ CoreDNS and Helm (DNS and chart tests)
#   ${WAYMARK_CACHE_DIR:-~/.cache/waymark}/xds-client/    the grpc-go xDS client (xDS tests)
#   ${CARGO_TARGET_DIR:-~/.cache/waymark/target}          Rust build output
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${WAYMARK_CACHE_DIR:-$HOME/.cache/waymark}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
log() { printf '\n[test] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
# Debian packages the tests use: openssl (control-plane certificates), curl
# (readiness probes). Installed only when missing.
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# dig (dnsutils): the DNS tests query the server with the real dig.
command -v dig >/dev/null || need+=(dnsutils)
# protoc (protobuf-compiler): the etcd client crate compiles etcd's protos when Waymark builds.
command -v protoc >/dev/null || need+=(protobuf-compiler)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
# The AWS CLI and boto3 from PyPI run the seed's examples (tests/seed_examples.rs).
command -v python3 >/dev/null || { echo "python3 not found: Python >= 3.9 with pip is needed for the AWS CLI and boto3" >&2; exit 1; }
if ! command -v aws >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
  log "installing the AWS CLI and boto3 (pip)"
  python3 -m pip install --quiet awscli==1.45.11 boto3==1.43.11
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: Go >= 1.26 is needed to build the test control plane and the xDS test client" >&2; exit 1; }

# --- static checks ---------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# --- control plane ---------------------------------------------------------
log "building (or reusing) the control plane"
scripts/build-controlplane.sh
log "building (or reusing) CoreDNS for the DNS tests"
scripts/build-coredns.sh
log "building (or reusing) the grpc-go xDS client for the xDS tests"
scripts/build-xds-client.sh
log "building (or reusing) Helm for the chart tests"
# tests/helm.rs (and scripts/render-manifests.sh) use this binary.
WAYMARK_HELM=$(scripts/build-helm.sh --print-bin)
export WAYMARK_HELM
cp_dir=$(mktemp -d "${TMPDIR:-/tmp}/waymark-test-cp.XXXXXX")
cleanup() { scripts/controlplane.sh down "$cp_dir" >/dev/null 2>&1 || true; rm -rf "$cp_dir"; }
trap cleanup EXIT
log "starting the shared control plane in $cp_dir"
scripts/controlplane.sh up "$cp_dir" --with-controller-manager --owner-pid $$ >/dev/null
# Every test binary uses this cluster (tests/common/mod.rs); each test works in
# its own Kubernetes namespace, so tests run in parallel.
export WAYMARK_TEST_KUBECONFIG="$cp_dir/kubeconfig"

# --- tests -----------------------------------------------------------------
log "cargo test"
# Benches (harness = false) are run by their own commands, not here.
cargo test --lib --bins --tests --no-fail-fast "$@"

# --- plots -----------------------------------------------------------------
# The plot command on a small real bench run (the restore bench, dev
# profile: it reuses the test build): every plot must be a non-empty PNG.
log "scripts/plot-benches.sh --check"
scripts/plot-benches.sh --check
