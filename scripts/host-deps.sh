#!/usr/bin/env bash
# Install the Debian packages the build and the tests use, once; idempotent and quiet when done.
# Needs root (the farm and CI run as root). Adds contrib/non-free so NVIDIA sources resolve.
set -euo pipefail

PKGS=(
  docker.io docker-registry containerd
  mmdebstrap debootstrap
  qemu-system-x86 qemu-utils ovmf ipxe-qemu
  grub-pc-bin grub-efi-amd64-bin grub2-common
  squashfs-tools dosfstools mtools e2fsprogs fdisk gdisk parted kpartx
  dpkg-dev apt-utils gnupg openssl xorriso cpio zstd openssh-client
  packer curl
  slurm-wlm munge
  chromium
  perftest
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "host-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# dockerd for the container tests and driver builds: start it if nothing answers.
if ! docker info >/dev/null 2>&1; then
  echo "host-deps: starting dockerd"
  mkdir -p /var/log/gpuforge
  (setsid dockerd >/var/log/gpuforge/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "host-deps: dockerd did not start, see /var/log/gpuforge/dockerd.log" >&2; exit 1; }
fi

# The local registry (127.0.0.1:5000) for driver containers and the NGC stand-ins: start it if nothing answers.
REGISTRY_CONF="$(cd "$(dirname "$0")" && pwd)/registry.yml"
if ! curl -fsS -m 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  echo "host-deps: starting docker-registry on 127.0.0.1:5000"
  mkdir -p /var/log/gpuforge /var/lib/gpuforge/registry
  (setsid docker-registry serve "$REGISTRY_CONF" >/var/log/gpuforge/registry.log 2>&1 &)
  for _ in $(seq 1 30); do curl -fsS -m 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 1; done
  curl -fsS -m 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1 || { echo "host-deps: docker-registry did not start, see /var/log/gpuforge/registry.log" >&2; exit 1; }
fi
