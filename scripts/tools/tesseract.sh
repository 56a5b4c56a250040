#!/usr/bin/env bash
# Install Debian's tesseract (the second OCR engine, `DOCPROC_ENGINE=tesseract`) if missing.
# It is a system package, not a Python one: docproc calls the `tesseract` CLI, so no wheel
# pins it. Idempotent: a machine that already has tesseract is left untouched.
set -euo pipefail
if command -v tesseract >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "tesseract.sh: tesseract is missing and installing it needs root (apt-get install tesseract-ocr)" >&2
    exit 1
  fi
fi
echo "tesseract.sh: installing tesseract-ocr with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd
command -v tesseract >/dev/null
