#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver: the browser the UI tests drive through
# Playwright (tests/test_prefect_tools.py). Playwright's own browser download is never used:
# it cannot be fetched here, and Debian's build is the one kept patched. Idempotent: a machine
# that already has both is left untouched.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
# shellcheck source=../lib/apt.sh
source "$(dirname "$0")/../lib/apt.sh"
apt_install chromium.sh chromium chromium-driver fonts-liberation
/usr/bin/chromium --version >&2
