#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver: the browser the UI tests drive through
# Playwright (tests/test_prefect_tools.py). Playwright's own browser download is never used:
# it cannot be fetched here, and Debian's build is the one kept patched. Idempotent: a machine
# that already has both is left untouched.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "chromium.sh: chromium is missing and installing it needs root (apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
fi
echo "chromium.sh: installing chromium and chromium-driver with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation
/usr/bin/chromium --version >&2
