#!/usr/bin/env bash
# Install what scripts/systemd-sandbox needs to boot a real systemd for the agent's tests: the
# systemd package (/lib/systemd/systemd; never booted as the machine's init, only in the sandbox)
# and nsenter/unshare (util-linux). Idempotent: does nothing when they are present.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /lib/systemd/systemd ] || missing+=(systemd)
command -v nsenter >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi
echo "/lib/systemd/systemd"
