#!/usr/bin/env bash
# Install the MinIO server into the docproc tool cache (outside the repo), reused when present.
# go install builds it from the Go module proxy, so no binary download site is needed.
# Pinned to a pseudo-version (MinIO tags RELEASE.* are not semver). The one first chosen,
# v0.0.0-20251015172955-9e49d5e7a648 (RELEASE.2025-10-15T17-29-55Z), is answered "not available"
# by the module proxy reachable here; this later master commit is the one it serves.
set -euo pipefail

MINIO_MODULE="github.com/minio/minio"
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_RELEASE="master 2026-02-12 (7aac2a2c5b7c)"

tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
bin_dir="$tools_dir/minio-$MINIO_VERSION/bin"
bin="$bin_dir/minio"

if [[ -x "$bin" ]]; then
    echo "minio $MINIO_RELEASE: cached" >&2
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "minio.sh: 'go' is not on PATH; install Go >= 1.24 to build the MinIO server" >&2
    exit 1
fi

mkdir -p "$tools_dir"
echo "minio $MINIO_RELEASE: building with go install (several minutes on a cold module cache)..." >&2
start=$(date +%s)
# Build into a temporary GOBIN and move it into place so an interrupted build never leaves
# a half-written binary that the check above would take for a finished install.
tmp_bin="$(mktemp -d "$tools_dir/.minio-build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT
GOBIN="$tmp_bin" CGO_ENABLED="${CGO_ENABLED:-0}" go install "$MINIO_MODULE@$MINIO_VERSION"
mkdir -p "$bin_dir"
mv "$tmp_bin/minio" "$bin"
echo "minio $MINIO_RELEASE: built in $(( $(date +%s) - start ))s" >&2
# The last line on stdout is the binary's path, for scripts and the test fixture.
echo "$bin"
