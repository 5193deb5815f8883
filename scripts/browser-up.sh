#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the dashboard's browser test (Playwright
# drives /usr/bin/chromium; `playwright install` is never used). Idempotent: does nothing
# when /usr/bin/chromium exists. Installing needs root (apt-get).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "browser-up: /usr/bin/chromium is missing; install it as root: apt-get install -y chromium" >&2
  exit 1
fi
echo "browser-up: installing chromium (apt-get)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
