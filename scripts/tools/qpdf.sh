#!/usr/bin/env bash
# Install Debian's qpdf if missing: the tests check the structure of the searchable PDFs with
# `qpdf --check`. Idempotent: a machine that already has qpdf is left untouched.
set -euo pipefail
if command -v qpdf >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "qpdf.sh: qpdf is missing and installing it needs root (apt-get install qpdf)" >&2
    exit 1
  fi
fi
echo "qpdf.sh: installing qpdf with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qpdf
command -v qpdf >/dev/null
