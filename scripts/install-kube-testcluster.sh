#!/usr/bin/env bash
# Install what the operator's tests run for real: a Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager; v1.20.2 built from Debian's source package by scripts/kube-testcluster,
# about 7 minutes on 2 cores the first time, cached under /var/cache/kube-testcluster) and kubectl
# (Debian package, kustomize built in). Idempotent: does nothing when all are present. Prints where
# the executables are.
set -euo pipefail
cd "$(dirname "$0")"

export KUBE_TESTCLUSTER_CACHE="${KUBE_TESTCLUSTER_CACHE:-/var/cache/kube-testcluster}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v kubectl >/dev/null 2>&1; then
  # Try with the package lists we have; refresh them once if the package is unknown.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl
  fi
fi

# The operator tests' stand-in kubelet gives each pod its own network namespace (`ip netns`, veth).
if ! command -v ip >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2
fi

as_root env KUBE_TESTCLUSTER_CACHE="$KUBE_TESTCLUSTER_CACHE" ./kube-testcluster build

echo "kube-apiserver: $KUBE_TESTCLUSTER_CACHE/kube-apiserver"
echo "kube-controller-manager: $KUBE_TESTCLUSTER_CACHE/kube-controller-manager"
echo "etcd: $(command -v etcd)"
echo "kubectl: $(command -v kubectl)"
