#!/usr/bin/env bash
# Create or update the project environment from uv.lock. uv itself lives in the tool cache,
# outside the repository, so a fresh clone on a warm machine reuses it and uv's package cache.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_DIR="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
UV_VERSION=0.13.8
UV="$TOOLS_DIR/uv-$UV_VERSION/bin/uv"
if [ ! -x "$UV" ]; then
  echo "bootstrap: installing uv $UV_VERSION into $TOOLS_DIR" >&2
  python3 -m venv "$TOOLS_DIR/uv-$UV_VERSION"
  "$TOOLS_DIR/uv-$UV_VERSION/bin/pip" install --quiet "uv==$UV_VERSION"
fi
"$UV" sync --frozen --quiet
