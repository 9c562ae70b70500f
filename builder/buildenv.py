"""Hermetic build environments: Debian base images the builder makes itself (mmdebstrap + docker import).

No registry pull: the root filesystem comes from the Debian archive (the mirror is a setting, so an
offline farm points it at its own mirror), is imported into the local Docker engine under a tag that
hashes the whole recipe, and is reused while that tag exists. Reused by the images builder.

    spec = BaseImageSpec(suite="bookworm", packages=("gcc", "make"))
    ref = ensure_base_image(spec)          # ImageRef(tag="gpuforge/base:bookworm-<hash>", id="sha256:...")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from validator import subp
from validator.errors import GpuforgeError, UserError

log = logging.getLogger("gpuforge.buildenv")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
# Bump when the recipe below changes in a way the spec fields do not show.
RECIPE_VERSION = 1

# What a kernel-module build needs besides the exact headers (which each cell installs itself).
KMOD_BUILD_PACKAGES = ("make", "gcc", "libc6-dev", "kmod", "xz-utils", "binutils", "dpkg-dev", "patch")


@dataclass(frozen=True)
class BaseImageSpec:
    """Everything that decides a base image's content; its hash is the image tag."""

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    components: Tuple[str, ...] = COMPONENTS
    packages: Tuple[str, ...] = ()
    variant: str = "minbase"
    # Extra suites whose lists are configured but pinned below the main suite (e.g. bookworm-backports).
    extra_suites: Tuple[str, ...] = ()
    repository: str = "gpuforge/base"

    def sources_lines(self) -> list:
        comps = " ".join(self.components)
        lines = [f"deb {self.mirror} {self.suite} {comps}", f"deb {self.mirror} {self.suite}-updates {comps}"]
        if self.security_mirror:
            lines.append(f"deb {self.security_mirror} {self.suite}-security {comps}")
        lines += [f"deb {self.mirror} {s} {comps}" for s in self.extra_suites]
        return lines

    def digest(self) -> str:
        # The mmdebstrap options are part of the recipe: changing them must change the tag.
        blob = json.dumps({"recipe": RECIPE_VERSION, "options": _options(self), **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.suite}-{self.digest()[:16]}"


@dataclass(frozen=True)
class ImageRef:
    tag: str
    id: str  # the engine's content id ("sha256:..."): part of every cache key built on top


def docker_client():
    """A docker SDK client, or a clear error saying how to start the engine."""
    try:
        import docker  # farm-side dependency only
    except ImportError:
        raise UserError("the docker Python package is not installed", hint="pip install 'gpuforge[farm]'") from None
    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except Exception as e:  # the SDK raises several types for "no engine"
        raise UserError(f"cannot reach the Docker engine: {e}", hint="run scripts/host-deps.sh (starts dockerd)") from None
    return client


def find_image(client, tag: str) -> Optional[ImageRef]:
    import docker

    try:
        img = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return ImageRef(tag, img.id)


def ensure_base_image(spec: BaseImageSpec, client=None, rebuild: bool = False) -> ImageRef:
    """Return the image for spec, building it with mmdebstrap + docker import when missing."""
    client = client or docker_client()
    if not rebuild:
        found = find_image(client, spec.tag)
        if found:
            log.info("base image %s cached (%s)", spec.tag, found.id[:19])
            return found
    log.warning("building base image %s (%s, %d extra packages)", spec.tag, spec.suite, len(spec.packages))
    with tempfile.TemporaryDirectory(prefix="gpuforge-base-") as tmp:
        tarball = os.path.join(tmp, "rootfs.tar")
        subp.run(mmdebstrap_argv(spec, tarball), timeout=1800)
        repo, tag = spec.tag.split(":", 1)
        with open(tarball, "rb") as f:
            client.api.import_image_from_data(
                f, repository=repo, tag=tag,
                changes=['CMD ["/bin/bash"]', "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8"],
            )
    found = find_image(client, spec.tag)
    if not found:
        raise GpuforgeError(f"docker import did not produce {spec.tag}")
    return found


def mmdebstrap_argv(spec: BaseImageSpec, out_tar: str) -> list:
    """The mmdebstrap command: minbase + packages, sources written as given, apt kept lean."""
    argv = ["mmdebstrap", "--mode=unshare" if os.geteuid() != 0 else "--mode=root"] + _options(spec)
    # Debian's base keyring verifies the archive; the lists stay in the image so a build can `apt-get install`
    # offline-fast, and each build still runs `apt-get update` itself for current versions.
    argv += [spec.suite, out_tar]
    argv += spec.sources_lines()
    return argv


def _options(spec: BaseImageSpec) -> list:
    hooks = [
        # No recommends, no docs: the image is a build tool, not a system.
        "--aptopt=APT::Install-Recommends \"false\"",
        "--aptopt=Acquire::Retries \"3\"",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    argv = [f"--variant={spec.variant}", "--format=tar", "--skip=cleanup/apt/lists"] + hooks
    if spec.packages:
        argv.append("--include=" + ",".join(spec.packages))
    return argv


def kmod_buildenv_spec(suite: str, mirror: str = DEFAULT_MIRROR, security_mirror: str = DEFAULT_SECURITY_MIRROR,
                       extra_suites: Tuple[str, ...] = ()) -> BaseImageSpec:
    """The base image a kernel-module build runs in (compiler, make, kmod; headers come per cell)."""
    return BaseImageSpec(suite=suite, mirror=mirror, security_mirror=security_mirror,
                         packages=KMOD_BUILD_PACKAGES, extra_suites=extra_suites,
                         repository="gpuforge/kmod-buildenv")
