#!/usr/bin/env bash
# Install Debian's tesseract (the second OCR engine, `DOCPROC_ENGINE=tesseract`) and the language
# packs docproc's `languages` setting can ask for, if missing. It is a system package, not a
# Python one: docproc calls the `tesseract` CLI, so no wheel pins it. Idempotent: a machine
# that already has tesseract and these packs is left untouched.
set -euo pipefail
# eng and osd (orientation) always; deu fra spa ita por for documents in those languages.
LANGS=(eng osd deu fra spa ita por)
missing=()
installed=""
if command -v tesseract >/dev/null 2>&1; then
  installed=$(tesseract --list-langs 2>/dev/null | tail -n +2)
fi
for lang in "${LANGS[@]}"; do
  if ! grep -qx "$lang" <<<"$installed"; then
    missing+=("tesseract-ocr-$lang")
  fi
done
if command -v tesseract >/dev/null 2>&1 && [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# shellcheck source=../lib/apt.sh
source "$(dirname "$0")/../lib/apt.sh"
apt_install tesseract.sh tesseract-ocr "${missing[@]}"
command -v tesseract >/dev/null
