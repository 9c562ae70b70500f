#!/bin/sh
# gpuforge image provisioning: the ONE recipe run inside the image, by the native build (chroot) and by Packer
# (qemu and amazon-ebs builders). Input: a stage directory (default /tmp/gpuforge-stage) holding
#   files/        overlay tree copied onto / (tuning, sysctl, units, cloud-init hook, initramfs scripts)
#   debs/         local packages: the gpuforge-validator .deb and the precompiled driver .debs
#   provision.env PACKAGES, INSTALL_DEBS, CARRY_DEBS, ENABLE_UNITS, MASK_UNITS, USERSPACE (pinned pkg=ver)
set -eu
STAGE=${1:-${GPUFORGE_STAGE:-/tmp/gpuforge-stage}}
. "$STAGE/provision.env"
export DEBIAN_FRONTEND=noninteractive
log() { echo "provision: $*"; }

log "overlay files"
cp -a "$STAGE/files/." /
chmod 0755 /usr/libexec/gpuforge/* /etc/initramfs-tools/hooks/* 2>/dev/null || true

apt_install() { apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$@"; }

# One apt transaction: the kmod package Provides the nvidia-kernel-<version> the user space asks for, so apt never
# reaches for the DKMS package; the user space is pinned to the kmod's exact version (USERSPACE=pkg=ver ...).
set --
for d in ${INSTALL_DEBS:-}; do set -- "$@" "$STAGE/debs/$d"; done
if [ -n "${PACKAGES:-}${USERSPACE:-}" ] || [ $# -gt 0 ]; then
  log "packages: ${PACKAGES:-} ${USERSPACE:-} ${INSTALL_DEBS:-}"
  apt-get update -q
  # shellcheck disable=SC2086
  apt_install ${PACKAGES:-} ${USERSPACE:-} "$@"
fi
if [ -n "${CARRY_DEBS:-}" ]; then
  # Several driver packages: the first-boot hook installs the one matching the GPU it finds.
  mkdir -p /var/lib/gpuforge/debs
  for d in $CARRY_DEBS; do cp "$STAGE/debs/$d" /var/lib/gpuforge/debs/; done
fi

log "units"
for u in ${ENABLE_UNITS:-}; do
  if systemctl cat "$u" >/dev/null 2>&1 || [ -e "/etc/systemd/system/$u" ] || [ -e "/lib/systemd/system/$u" ]; then
    systemctl enable "$u"
  else
    log "unit $u not installed, not enabled"
  fi
done
for u in ${MASK_UNITS:-}; do systemctl mask "$u"; done

log "initramfs (nouveau blacklist, netboot root script)"
update-initramfs -u -k all
if command -v update-grub >/dev/null 2>&1 && [ -d /boot/grub ] && [ "${SKIP_UPDATE_GRUB:-0}" != 1 ]; then
  update-grub
fi

log "no credentials, no identity in the image"
usermod -p '*' root
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# A Packer build boots the image once: forget that instance (clean also empties /var/lib/cloud/scripts).
cloud-init clean --logs >/dev/null 2>&1 || true
log "first-boot hook: once per instance through cloud-init"
mkdir -p /var/lib/cloud/scripts/per-instance
ln -sf /usr/libexec/gpuforge/gpuforge-firstboot /var/lib/cloud/scripts/per-instance/gpuforge-firstboot
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/* 2>/dev/null || true
log "done"
