"""The scripts that run inside the build containers, and what their output means (parsing is pure).

The scripts are part of every image's cache key (recipe_sha256): change one and every image rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import List, Tuple

from builder.containers.spec import Verified

# Bump when the steps change what they produce in a way the scripts' text does not show.
RECIPE_VERSION = 1
ENTRYPOINT = Path(__file__).resolve().parents[2] / "drivers" / "container" / "gpuforge-driver"
ENTRYPOINT_IN_IMAGE = "/usr/local/bin/gpuforge-driver"
IMAGE_ENV = "/etc/gpuforge/driver-image.env"
STAGE = "/gf"
# What the entrypoint runs besides dash and coreutils: modprobe/modinfo/rmmod, mount/umount, flock, find.
BASE_PACKAGES = ("kmod", "mount", "util-linux", "findutils")

# Run once per suite in a container of our mmdebstrap base; the result is flattened into one layer.
SLIM = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
# usrmerge (and the perl it pulls in) only converts a root file system; perl-base stays for dpkg's helpers.
apt-get purge -y -q usrmerge perl '^perl-modules-[0-9.]+$' '^libperl[0-9.]+$' tzdata 2>&1 | tail -n 2
apt-get autoremove --purge -y -q | tail -n 1
# Nothing in a driver container converts charsets: iconv's modules stay out, now and in later installs.
echo 'path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' > /etc/dpkg/dpkg.cfg.d/90-gpuforge-runtime
rm -rf /usr/lib/x86_64-linux-gnu/gconv
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/cache/debconf/*-old \
       /var/log/* /tmp/* /root/.cache
"""

# Run per image in a container of the runtime image; /gf holds kmod.deb, the apt pin and the entrypoint.
INSTALL = r"""set -eu
export DEBIAN_FRONTEND=noninteractive
cp {stage}/gpuforge-nvidia.pref /etc/apt/preferences.d/gpuforge-nvidia.pref
# The kernel is the node's: this stub stands in for the linux-image the kmod package depends on.
mkdir -p {stage}/stub/DEBIAN
cat > {stage}/stub/DEBIAN/control <<EOF
Package: gpuforge-host-kernel-{abi}
Version: 1
Architecture: all
Maintainer: gpuforge build farm <gpuforge@localhost>
Priority: optional
Section: kernel
Provides: linux-image-{abi}
Description: the node's running kernel {abi} (driver container)
 A driver container loads its modules into the kernel of the node it runs on;
 this package stands in for linux-image-{abi} so no kernel is installed here.
EOF
dpkg-deb --root-owner-group --build {stage}/stub {stage}/stub.deb >/dev/null
apt-get update -q
apt-get install -y -q --no-install-recommends {stage}/stub.deb {stage}/kmod.deb
install -D -m 0755 {stage}/gpuforge-driver {entrypoint}
"""

VERIFY = r"""set -eu
d=/lib/modules/{abi}/updates/gpuforge
for ko in "$d"/*.ko; do
  echo "module $(basename "$ko") $(modinfo -F vermagic "$ko" | cut -d' ' -f1) depends=$(modinfo -F depends "$ko")" \
       "srcversion=$(modinfo -F srcversion "$ko") signer=$(modinfo -F signer "$ko")"
done
echo "resolves $(modinfo -k {abi} -F filename {prefix})"
dpkg-query -W -f '${{Package}}\t${{Version}}\t${{db:Status-Abbrev}}\t${{Installed-Size}}\n' | sed 's/^/pkg\t/'
for f in /lib/firmware/nvidia/{driver}/*; do [ -e "$f" ] && echo "firmware $(basename "$f")"; done
for c in nvidia-smi nvidia-persistenced modprobe mount flock; do echo "command $c $(command -v "$c" || echo MISSING)"; done
"""

FINALIZE = r"""set -eu
mkdir -p /etc/gpuforge
install -m 0644 {stage}/driver-image.env {image_env}
apt-get clean
rm -rf {stage} /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/* /tmp/* /root/.cache
"""

NVIDIA_PACKAGE = re.compile(r"^(nvidia-|libnvidia-|libcuda|firmware-nvidia)")


def recipe_sha256() -> str:
    blob = json.dumps([RECIPE_VERSION, BASE_PACKAGES, SLIM, INSTALL, VERIFY, FINALIZE], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def render(script: str, **kw) -> str:
    return script.format(stage=STAGE, entrypoint=ENTRYPOINT_IN_IMAGE, image_env=IMAGE_ENV, **kw)


def parse_packages(out: str, prefix: str = "") -> List[Tuple[str, str, int]]:
    """(package, version, installed KiB) from `pkg<TAB>name<TAB>version<TAB>status<TAB>size` lines (installed only)."""
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if prefix:
            if parts[0] != prefix:
                continue
            parts = parts[1:]
        if len(parts) == 4 and parts[2].startswith("ii"):
            rows.append((parts[0], parts[1], int(parts[3] or 0)))
    return rows


def parse_verify(out: str, abi: str, driver_debian_version: str, module: str = "nvidia-current") -> Tuple[Verified, List[str]]:
    """What the image holds, and the problems that make it unfit to ship (empty list: fit)."""
    problems: List[str] = []
    modules, signers, firmware, userspace, depends = [], set(), [], [], []
    srcversion = ""
    commands = {}
    resolves = ""
    for line in out.splitlines():
        parts = line.split(" ")
        if line.startswith("module "):
            name, magic = parts[1], parts[2] if len(parts) > 2 else ""
            modules.append(name)
            signers.add(line.split("signer=", 1)[1].strip() if "signer=" in line else "")
            fields = dict(p.split("=", 1) for p in parts[3:] if "=" in p and p.split("=", 1)[0] in ("depends", "srcversion"))
            depends.append((name[:-3] if name.endswith(".ko") else name, fields.get("depends", "")))
            if name == f"{module}.ko":
                srcversion = fields.get("srcversion", "")
            if magic != abi:
                problems.append(f"{name}: vermagic {magic or '(none)'} is not {abi}")
        elif line.startswith("resolves "):
            resolves = line.split(" ", 1)[1].strip()
        elif line.startswith("firmware "):
            firmware.append(parts[1])
        elif line.startswith("command "):
            commands[parts[1]] = parts[2] if len(parts) > 2 else "MISSING"
    for name, version, _ in parse_packages(out, "pkg"):
        if NVIDIA_PACKAGE.match(name):
            userspace.append((name, version))
    if not modules:
        problems.append(f"no kernel module under /lib/modules/{abi}/updates/gpuforge")
    if "/updates/gpuforge/" not in resolves:
        problems.append(f"modinfo does not resolve the image's module (got {resolves or 'nothing'})")
    if len(signers) > 1:
        problems.append(f"modules signed inconsistently: {sorted(signers)}")
    if not firmware:
        problems.append("no GSP firmware under /lib/firmware/nvidia/<driver>/ (firmware-nvidia-gsp missing)")
    for c, where in sorted(commands.items()):
        if where == "MISSING":
            problems.append(f"{c} is not in the image")
    versions = dict(userspace)
    for pkg in ("nvidia-smi", "libcuda1", "libnvidia-ml1"):
        if versions.get(pkg) != driver_debian_version:
            problems.append(f"{pkg} is {versions.get(pkg) or 'missing'}, the kmod needs {driver_debian_version}")
    signer = next(iter(signers)) if len(signers) == 1 else ""
    if not srcversion and modules:
        problems.append(f"no srcversion for {module}.ko")
    return Verified(abi, signer, tuple(sorted(modules)), tuple(sorted(userspace)), tuple(sorted(firmware)),
                    tuple(sorted(depends)), srcversion), problems
