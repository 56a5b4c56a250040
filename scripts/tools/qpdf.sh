#!/usr/bin/env bash
# Install Debian's qpdf if missing: the tests check the structure of the searchable PDFs with
# `qpdf --check`. Idempotent: a machine that already has qpdf is left untouched.
set -euo pipefail
if command -v qpdf >/dev/null 2>&1; then
  exit 0
fi
# shellcheck source=../lib/apt.sh
source "$(dirname "$0")/../lib/apt.sh"
apt_install qpdf.sh qpdf
command -v qpdf >/dev/null
