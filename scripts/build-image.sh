#!/usr/bin/env bash
# Build the docproc image (`make image`), with or without a container registry and the PyTorch index.
#
#   scripts/build-image.sh [TAG]      # default docproc:dev; prints the build time and the image size
#
# PYTHON_IMAGE   the Python base. Default: python:3.11-slim-bookworm where Docker Hub's name resolves, else
#                the Debian-made docproc.local/python:3.11-bookworm (built by scripts/kind-cluster.sh).
# TORCH_INDEX_URL  the PyTorch CPU index where download.pytorch.org resolves, else empty: torch and
#                torchvision then come from PyPI exactly as locked.
# CA_BUNDLE      a CA bundle for pip and uv inside the build (default: this machine's trust store,
#                /etc/ssl/certs/ca-certificates.crt, which holds the CAs added under
#                /usr/local/share/ca-certificates). Passed as a BuildKit secret: never part of the
#                repository, the build context or any image layer.
# Registry and index are chosen by DNS lookups only: nothing is contacted to decide.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-docproc:dev}"
tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
docker=/usr/bin/docker
mkdir -p "$tools_dir/kind"
# The Docker daemon kind uses (scripts/kind-cluster.sh starts its own when none answers).
DOCKER_HOST="$(scripts/kind-cluster.sh docker-host)"
export DOCKER_HOST DOCKER_BUILDKIT=1

if [[ -z "${PYTHON_IMAGE:-}" ]]; then
    if getent hosts registry-1.docker.io >/dev/null 2>&1; then
        PYTHON_IMAGE=python:3.11-slim-bookworm
    else
        PYTHON_IMAGE=docproc.local/python:3.11-bookworm
        "$docker" image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || scripts/kind-cluster.sh base
    fi
fi
if [[ -z "${TORCH_INDEX_URL+set}" ]]; then
    if getent hosts download.pytorch.org >/dev/null 2>&1; then
        TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
    else
        TORCH_INDEX_URL=
    fi
fi
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[[ -s "$CA_BUNDLE" ]] && secret=(--secret "id=ca-certificates,src=$CA_BUNDLE")

echo "build-image: $TAG from PYTHON_IMAGE=$PYTHON_IMAGE TORCH_INDEX_URL=${TORCH_INDEX_URL:-<PyPI, as locked>}" >&2
old_id=$("$docker" image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
start=$(date +%s)
"$docker" build --progress=plain -t "$TAG" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" \
    "${secret[@]}" . >"$tools_dir/kind/image-build.log" 2>&1 \
    || { tail -40 "$tools_dir/kind/image-build.log" >&2; echo "build-image: docker build failed (log: $tools_dir/kind/image-build.log)" >&2; exit 1; }
size=$("$docker" image inspect -f '{{.Size}}' "$TAG")
# The image this build replaced: gone unless a container or another tag still uses it (disk: ~7 GB each).
if [[ -n "$old_id" && "$old_id" != "$("$docker" image inspect -f '{{.Id}}' "$TAG")" ]]; then
    "$docker" rmi "$old_id" >/dev/null 2>&1 || true
fi
# uv's download cache (a BuildKit cache mount, ~6.5 GB of wheels with the CUDA torch) only speeds up a
# rebuild after uv.lock changes; the dependency layer itself stays cached. Disk matters more here.
# The rest of the build cache (the ~7 GB dependency layer a warm rebuild needs) stays: `--keep-storage`
# was tried and emptied it all with Docker 20.10.
"$docker" builder prune -f --filter type=exec.cachemount >/dev/null 2>&1 || true
echo "build-image: $TAG built in $(( $(date +%s) - start ))s, $(( size / 1024 / 1024 )) MiB" >&2
