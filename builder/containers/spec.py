"""What a driver image is, as data: names, tags, labels and cache inputs (pure; no docker, no network).

Tags follow NVIDIA's precompiled scheme: `<driver-version>-<kernel-abi>-<os>` plus the alias `<branch>-<kernel-abi>-<os>`,
in repository `nvidia-driver` (proprietary modules) or `nvidia-driver-open`. A '+' in a kernel ABI (6.12.117+deb13-...)
is not allowed in a tag and becomes '_': the entrypoint applies the same rule when it names the tag a node needs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from validator.errors import UserError

OS_TAGS = {"bookworm": "debian12", "trixie": "debian13"}
REPOSITORY = {"proprietary": "nvidia-driver", "open": "nvidia-driver-open"}
LOCAL_NAMESPACE = "gpuforge"
LABEL = "io.gpuforge."
OCI = "org.opencontainers.image."
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# host[:port] then optional /path components (lowercase, as the distribution spec wants); no scheme, no tag.
_REGISTRY = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?P<path>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)/?$")


def os_tag(suite: str) -> str:
    """debian12 for bookworm (and bookworm-backports), debian13 for trixie."""
    base = suite.split("-")[0]
    if base not in OS_TAGS:
        raise UserError(f"no driver-container OS tag for Debian suite {suite!r}", hint="known: " + ", ".join(OS_TAGS))
    return OS_TAGS[base]


def tag_kernel(abi: str) -> str:
    return abi.replace("+", "_")


def parse_registry(ref: str) -> str:
    """`127.0.0.1:5000`, `registry.example.com/team/gpu` -> normalised prefix; UserError on anything else."""
    m = _REGISTRY.match(ref.strip())
    if not m or "://" in ref or "@" in ref:
        raise UserError(f"--registry {ref!r} is not a registry reference",
                        hint="expected HOST[:PORT][/NAMESPACE], e.g. 127.0.0.1:5000/gpuforge (no scheme, no tag)")
    return m.group("host") + m.group("path")


def repository(flavour: str, registry: Optional[str] = None) -> str:
    prefix = parse_registry(registry) if registry else LOCAL_NAMESPACE
    return f"{prefix}/{REPOSITORY[flavour]}"


@dataclass(frozen=True)
class Kmod:
    """The cell's built .deb as found in dist/apt (path relative to dist)."""

    rel: str
    package: str
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ImageSpec:
    """One driver image: a cell's kmod plus the user space of the same driver version on one Debian suite."""

    cell_id: str
    driver: str
    branch: int
    flavour: str
    kernel: str
    suite: str  # the Debian suite of the user space (the driver's), and of the image's base
    module_prefix: str  # Debian's module file name: nvidia-current, nvidia-current-open
    kmod: Kmod

    @property
    def os(self) -> str:
        return os_tag(self.suite)

    @property
    def tags(self) -> Tuple[str, str]:
        """(version tag, branch alias)."""
        k = tag_kernel(self.kernel)
        tags = (f"{self.driver}-{k}-{self.os}", f"{self.branch}-{k}-{self.os}")
        for t in tags:
            if not _TAG.match(t):
                raise UserError(f"{self.cell_id}: {t!r} is not a valid image tag")
        return tags

    def refs(self, registry: Optional[str] = None) -> Tuple[str, ...]:
        repo = repository(self.flavour, registry)
        return tuple(f"{repo}:{t}" for t in self.tags)

    def to_dict(self) -> dict:
        return dict(asdict(self), os=self.os, tags=list(self.tags))


@dataclass(frozen=True)
class Verified:
    """What the verify step read inside the built image (it decides the signed label and the image's env file)."""

    vermagic: str
    signer: str  # empty: unsigned
    modules: Tuple[str, ...]  # module files under /lib/modules/<abi>/updates/gpuforge
    userspace: Tuple[Tuple[str, str], ...]  # (package, version) of the NVIDIA user space installed
    firmware: Tuple[str, ...]  # GSP firmware files
    depends: Tuple[Tuple[str, str], ...] = ()  # (module file without .ko, modinfo depends)
    srcversion: str = ""  # of the main module: the entrypoint adopts a loaded nvidia with the same one

    @property
    def signed(self) -> bool:
        return bool(self.signer)


def image_env(spec: ImageSpec, verified: Verified) -> str:
    """/etc/gpuforge/driver-image.env: what the entrypoint knows about its image (sourced by sh; values quoted)."""
    values = {
        "GPUFORGE_DRIVER": spec.driver, "GPUFORGE_BRANCH": str(spec.branch), "GPUFORGE_FLAVOUR": spec.flavour,
        "GPUFORGE_KERNEL": spec.kernel, "GPUFORGE_OS": spec.os, "GPUFORGE_SIGNED": "yes" if verified.signed else "no",
        "GPUFORGE_SIGNER": verified.signer, "GPUFORGE_REPOSITORY": repository(spec.flavour),
        "GPUFORGE_MODULE_PREFIX": spec.module_prefix, "GPUFORGE_KMOD_SHA256": spec.kmod.sha256,
        "GPUFORGE_SRCVERSION": verified.srcversion,
        # module:dep,dep ... read at build time, so the node runs modinfo once (it reads the whole 65 MB module)
        "GPUFORGE_DEPS": " ".join(f"{m}:{d}" for m, d in verified.depends),
    }
    return "".join(f"{k}='{_sh_quote(v)}'\n" for k, v in values.items())


def _sh_quote(v: str) -> str:
    return v.replace("'", "'\\''")


def labels(spec: ImageSpec, verified: Verified, input_hash: str, created: str, base: str, base_id: str) -> Dict[str, str]:
    """OCI annotations plus ours: a node and the registry can tell what an image carries without pulling it."""
    title = f"gpuforge NVIDIA {spec.driver} ({spec.flavour}) for Linux {spec.kernel}"
    return {
        OCI + "title": title,
        OCI + "description": (f"Precompiled NVIDIA {spec.flavour} kernel modules {spec.driver} for {spec.kernel} and the "
                              f"NVIDIA user space of the same version from Debian {spec.suite}; "
                              "entrypoint gpuforge-driver init|unload|status"),
        OCI + "version": spec.driver,
        OCI + "created": created,
        OCI + "vendor": "gpuforge",
        OCI + "base.name": base,
        OCI + "base.digest": base_id,
        LABEL + "driver": spec.driver,
        LABEL + "branch": str(spec.branch),
        LABEL + "flavour": spec.flavour,
        LABEL + "kernel": spec.kernel,
        LABEL + "os": spec.os,
        LABEL + "cell": spec.cell_id,
        LABEL + "kmod.package": spec.kmod.package,
        LABEL + "kmod.version": spec.kmod.version,
        LABEL + "kmod.sha256": spec.kmod.sha256,
        LABEL + "signed": "yes" if verified.signed else "no",
        LABEL + "signer": verified.signer,
        LABEL + "userspace": ", ".join(f"{p}={v}" for p, v in verified.userspace),
        LABEL + "input-hash": input_hash,
    }


def cache_inputs(spec: ImageSpec, runtime_id: str, recipe_sha: str, entrypoint_sha: str) -> dict:
    """Everything that decides the image's content, named so a rebuild can say what changed."""
    return {
        "recipe": recipe_sha,
        "entrypoint": entrypoint_sha,
        "runtime_image": runtime_id,
        "kmod": f"{spec.kmod.package}={spec.kmod.version} sha256:{spec.kmod.sha256}",
        "driver": spec.driver,
        "flavour": spec.flavour,
        "kernel": spec.kernel,
        "suite": spec.suite,
    }


def kmod_rel(package: str, version: str) -> str:
    """Where `gpuforge build drivers` publishes a kmod .deb, relative to dist/."""
    return f"apt/pool/main/{package[0]}/{package}/{package}_{version}_amd64.deb"


def image_spec(cell, kmod: Kmod) -> ImageSpec:
    """The image for a matrix cell (builder.matrix.Cell) whose kmod was found."""
    return ImageSpec(cell_id=cell.id, driver=cell.driver.version, branch=cell.driver.branch, flavour=cell.flavour,
                     kernel=cell.kernel.abi, suite=cell.driver.suite.split("-")[0],
                     module_prefix=cell.flavour_def.module_prefix, kmod=kmod)


def record_path(dist: Path, cell_id: str) -> Path:
    """dist/containers/<cell>.json: the image record (tags, id, sizes, packages), the cache entry's artifact."""
    return Path(dist) / "containers" / (re.sub(r"[^A-Za-z0-9.+-]", "_", cell_id) + ".json")
