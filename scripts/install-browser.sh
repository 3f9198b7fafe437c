#!/usr/bin/env bash
# Install the browser the web UI tests drive: Debian's Chromium at /usr/bin/chromium (Playwright
# launches it by path; `playwright install` is never used). Idempotent: does nothing when present.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$CHROMIUM" ]; then
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
  fi
fi
echo "$CHROMIUM"
