#!/usr/bin/env bash
# Install the chain clients the tests run for real: litecoind (Debian package) and anvil (npm).
# Idempotent: does nothing when both are present. Caches under /var/cache/nodeplane and prints
# where the executables are. `apt-get update` runs at most once, and only if an install needs it.
set -euo pipefail

CACHE_DIR="${NODEPLANE_CACHE_DIR:-/var/cache/nodeplane}"
ANVIL_VERSION="${ANVIL_VERSION:-1.7.1}"
# Older releases installed side by side (bin/anvil-<version>), for the in-place upgrade and
# rollback tests: an agent declares every version it finds.
ANVIL_EXTRA_VERSIONS="${ANVIL_EXTRA_VERSIONS:-1.5.1}"
LITECOIND=/usr/lib/litecoin/litecoind
APT_UPDATED=0

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # Try with the package lists we have; refresh them once if the package is unknown.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
    if [ "$APT_UPDATED" -eq 0 ]; then
      as_root apt-get update
      APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  fi
}

if [ ! -x "$LITECOIND" ]; then
  apt_install litecoind
fi

case "$(uname -m)" in
  x86_64 | amd64) ANVIL_PLATFORM=linux-amd64 ;;
  aarch64 | arm64) ANVIL_PLATFORM=linux-arm64 ;;
  *) echo "no anvil build for $(uname -m)" >&2; exit 1 ;;
esac
NPM_PREFIX="$CACHE_DIR/npm"
ANVIL_REAL="$NPM_PREFIX/node_modules/@foundry-rs/anvil-$ANVIL_PLATFORM/bin/anvil"
if [ ! -x "$ANVIL_REAL" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    apt_install npm
  fi
  mkdir -p "$NPM_PREFIX"
  # The package ships the native binary as a per-platform optional dependency; its own
  # postinstall step is not needed to use that binary directly.
  npm install --prefix "$NPM_PREFIX" --no-audit --no-fund "@foundry-rs/anvil@$ANVIL_VERSION"
fi
# A stable path for tests and for an executor's <data_dir>/bin symlink.
mkdir -p "$CACHE_DIR/bin"
ln -sfn "$ANVIL_REAL" "$CACHE_DIR/bin/anvil"

for version in $ANVIL_EXTRA_VERSIONS; do
  [ "$version" = "$ANVIL_VERSION" ] && continue
  prefix="$CACHE_DIR/npm-anvil-$version"
  real="$prefix/node_modules/@foundry-rs/anvil-$ANVIL_PLATFORM/bin/anvil"
  if [ ! -x "$real" ]; then
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund "@foundry-rs/anvil@$version"
  fi
  ln -sfn "$real" "$CACHE_DIR/bin/anvil-$version"
  echo "anvil $version: $CACHE_DIR/bin/anvil-$version"
done

echo "litecoind: $LITECOIND"
echo "anvil: $CACHE_DIR/bin/anvil"
