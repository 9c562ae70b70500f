"""`gpuforge build images`: the golden-image runbook. Resolve -> cache check -> rootfs (mmdebstrap + provision.sh)
-> raw disk (BIOS+UEFI) -> qcow2 -> netboot bundle -> manifest, each a timed step; outputs land atomically."""

from __future__ import annotations

import enum
import json
import logging
import os
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from builder import cache, steps
from builder.digest import sha256_file
from builder.images import disk, netboot, refs, stage
from builder.images import ngc as ngc_images
from builder.images.definition import ImageDef
from builder.images.validator_deb import build_validator_deb, source_hash
from builder.lock import FileLock
from validator import subp, userfile
from validator.atomic import write_text
from validator.errors import CommandError, ConfigError, GpuforgeError, UserError
from validator.pkgname import kmod_package_name

log = logging.getLogger("gpuforge.images")
RECIPE_VERSION = 1  # bump when the build steps change what they produce
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_PACKAGES = (
    "systemd-sysv", "udev", "kmod", "procps", "e2fsprogs", "cloud-guest-utils", "iproute2", "ifupdown", "isc-dhcp-client", "initramfs-tools", "zstd",
    "cloud-init", "openssh-server", "sudo", "dbus", "python3", "python3-click", "python3-yaml", "python3-jinja2",
)
# Keep docs, man pages and translations out of the image (smaller disk, faster squashfs over TFTP).
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*",
                 "/usr/share/lintian/*", "/usr/share/i18n/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")


class DriverStatus(str, enum.Enum):
    INSTALLED = "installed"  # the one driver: installed in the image
    CARRIED = "carried"  # one of several: its .deb is in the image, the first-boot hook installs the GPU's one
    ABSENT = "absent"  # not built yet: the image goes without it (said in the manifest)
    PENDING = "pending"  # found, installed or carried once all are known


@dataclass(frozen=True)
class DriverPlan:
    ref: str
    flavour: str
    package: str  # kmod package name for this kernel
    status: DriverStatus
    deb: Optional[str] = None  # file in the builder's apt repo
    reason: str = ""


@dataclass(frozen=True)
class Resolved:
    image: ImageDef
    kernel: refs.KernelRef
    tuning: refs.Tuning
    drivers: tuple  # DriverPlan
    ngc: tuple = ()  # builder.images.ngc.NgcPlan, digests pinned before the cache key


@dataclass
class Context:
    """Paths and state of one image build (the definition itself is frozen in Resolved)."""

    repo: Path
    dist: Path
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    apt_dir: Optional[Path] = None  # the builder's apt repo (dist/apt)
    ngc_mirror: Optional[str] = None  # pull ngc_images from MIRROR/nvidia/X instead of nvcr.io/nvidia/X
    force: bool = False  # --rebuild: ignore the cache
    timings: dict = field(default_factory=dict)
    last_timings: dict = field(default_factory=dict)  # step -> seconds of the last build (ETA on a TTY)

    @property
    def images_dir(self) -> Path:
        return self.dist / "images"


say = steps.say


def step(ctx: Context, title: str):
    """A timed build step (builder.steps: ticker with the last build's time on a TTY) recorded in ctx.timings."""
    return steps.step(title, ctx.timings, ctx.last_timings.get(title))


# ------------------------------------------------------------------------------------------- resolve


def _find_kmod_deb(apt_dir: Optional[Path], package: str) -> Optional[Path]:
    if apt_dir is None or not apt_dir.is_dir():
        return None
    hits = sorted(apt_dir.rglob(f"{package}_*.deb"))
    return hits[-1] if hits else None


def resolve(image: ImageDef, ctx: Context) -> Resolved:
    """Check every reference the definition makes (kernel, drivers, tuning) before anything is built."""
    kernels = refs.load_kernels(ctx.repo / "kernels")
    if image.kernel not in kernels:
        raise UserError(f"{image.path}: kernel: {image.kernel!r} is not defined in kernels/*.yaml",
                        hint="known kernels: " + (", ".join(sorted(kernels)) or "none"))
    kernel = kernels[image.kernel]
    tuning = refs.load_tuning(ctx.repo / "kernels" / "tuning", image.tuning)
    drivers = refs.load_drivers(ctx.repo / "drivers")
    plans = []
    for i, ref in enumerate(image.drivers):
        did, flavour = refs.split_driver_ref(ref)
        if did not in drivers:
            raise UserError(f"{image.path}: drivers[{i}]: {did!r} is not defined in drivers/*.yaml",
                            hint="known drivers: " + (", ".join(sorted(drivers)) or "none"))
        d = drivers[did]
        if flavour not in d.flavours:
            raise UserError(f"{image.path}: drivers[{i}]: driver {did} has no {flavour!r} flavour",
                            hint="flavours: " + ", ".join(d.flavours))
        pkg = kmod_package_name(d.version, flavour, kernel.abi)
        deb = _find_kmod_deb(ctx.apt_dir, pkg)
        if deb is None:
            plans.append(DriverPlan(ref, flavour, pkg, DriverStatus.ABSENT, None,
                                    f"no {pkg} in {ctx.apt_dir}: run `gpuforge build drivers` for kernel {kernel.abi}"))
        else:
            plans.append(DriverPlan(ref, flavour, pkg, DriverStatus.PENDING, str(deb)))
    present = [p for p in plans if p.deb]
    # One driver: install it now. Several: carry them all; the first-boot hook installs the one the GPU needs.
    mode = DriverStatus.INSTALLED if len(present) == 1 else DriverStatus.CARRIED
    plans = [p if not p.deb else DriverPlan(p.ref, p.flavour, p.package, mode, p.deb) for p in plans]
    return Resolved(image, kernel, tuning, tuple(plans), ngc_images.resolve(image, ctx.ngc_mirror))


# ------------------------------------------------------------------------------------------- cache


def cache_inputs(res: Resolved, ctx: Context) -> dict:
    """Every input that changes the image, by value or hash (mkosi cache_manifest style)."""
    recipe_files = [ctx.repo / "images/provision/provision.sh", ctx.repo / "cloud-init/gpuforge-firstboot.sh"]
    code = Path(__file__).parent
    inputs = {
        "recipe_version": RECIPE_VERSION,
        "definition": json.loads(res.image.to_json()),
        "kernel": {"abi": res.kernel.abi, "package": res.kernel.image_package, "version": res.kernel.version,
                   "suite": res.kernel.suite},
        "tuning_sha256": res.tuning.sha256,
        "drivers": [{"package": p.package, "deb_sha256": sha256_file(Path(p.deb)) if p.deb else None} for p in res.drivers],
        "validator_sha256": source_hash(ctx.repo),
        "recipe_sha256": {str(p.relative_to(ctx.repo)): sha256_file(p) for p in recipe_files},
        "code_sha256": {p.name: sha256_file(p) for p in sorted(code.glob("*.py"))},
        "mirror": ctx.mirror,
        "security_mirror": ctx.security_mirror,
    }
    if res.ngc:  # the manifest digests, not the mirror: the same image from any mirror is the same image
        inputs["ngc_images"] = ngc_images.cache_inputs(res.ngc)
    return inputs


cache_key = cache.cache_key


def _read_manifest(out_dir: Path) -> Optional[dict]:
    """The image's manifest; None (the image is built again) when absent or, with a warning, unreadable."""
    path = out_dir / "manifest.json"
    if not os.path.lexists(path):
        return None
    try:
        return userfile.load_json(path, "image manifest", top=dict)
    except ConfigError as e:
        log.warning("%s; building the image again", e.message)
        return None


def manifest_entry(out_dir: Path) -> Optional[cache.CacheEntry]:
    """The image manifest seen as a cache entry: key, inputs, and the image files as artifacts."""
    m = _read_manifest(out_dir)
    try:
        return cache.CacheEntry(m["image"], m["cache_key"], m.get("inputs") or {}, cache.CacheStatus.BUILT,
                                tuple(cache.Artifact(name, int(i["size"]), str(i["sha256"]))
                                      for name, i in m.get("files", {}).items()),
                                seconds=float(m.get("build_seconds", 0.0)), steps=tuple(m.get("steps", {}).items())) \
            if m else None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def cached_manifest(out_dir: Path, key: str) -> Optional[dict]:
    """The existing manifest when its key matches and every file it lists is there with its size (GBs: no re-hash)."""
    entry = manifest_entry(out_dir)
    if entry is None or entry.key != key or not entry.intact(out_dir, deep=False):
        return None
    return _read_manifest(out_dir)


def changed_inputs(out_dir: Path, inputs: dict) -> tuple:
    """What differs from the last build of this image, in the one shape of builder.cache."""
    entry = manifest_entry(out_dir)
    return cache.changed_inputs(entry.inputs if entry else None, inputs)


# ------------------------------------------------------------------------------------------- steps


def _sources(res: Resolved, ctx: Context) -> list:
    suite = res.image.suite
    comps = "main contrib non-free non-free-firmware"
    lines = [f"deb {ctx.mirror} {suite} {comps}", f"deb {ctx.mirror} {suite}-updates {comps}",
             f"deb {ctx.security_mirror} {suite}-security {comps}"]
    if res.kernel.suite.endswith("-backports"):
        lines.append(f"deb {ctx.mirror} {res.kernel.suite} {comps}")
    return lines


def userspace_pins(res: Resolved, ctx: Context) -> tuple:
    """nvidia-smi=V libcuda1=V ... from the installed kmod package's Depends (exact '=' relations only)."""
    pins = []
    for p in res.drivers:
        if p.status is not DriverStatus.INSTALLED:
            continue
        depends = subp.run(["dpkg-deb", "-f", p.deb, "Depends"], timeout=60).stdout
        for rel in depends.split(","):
            rel = rel.strip()
            if "(=" in rel:
                name, ver = rel.split("(=", 1)
                pins.append(f"{name.strip()}={ver.strip(' )')}")
    return tuple(dict.fromkeys(pins))


def make_stage(res: Resolved, ctx: Context, work: Path) -> Path:
    st = work / "stage"
    (st / "debs").mkdir(parents=True)
    vdeb = build_validator_deb(ctx.repo, work)
    shutil.copy2(vdeb, st / "debs" / vdeb.name)
    install, carry = [vdeb.name], []  # type: list[str], list[str]
    for p in res.drivers:
        if p.deb:
            shutil.copy2(p.deb, st / "debs" / Path(p.deb).name)
            (install if p.status is DriverStatus.INSTALLED else carry).append(Path(p.deb).name)
    info = json.dumps({"image": res.image.name, "kernel": res.kernel.abi, "tuning": res.tuning.name,
                       "drivers": [p.package for p in res.drivers if p.deb]}, indent=2) + "\n"
    stage.render_stage(st, ctx.repo, res.image, res.tuning, packages=(), userspace=userspace_pins(res, ctx),
                       install_debs=tuple(install), carry_debs=tuple(carry), image_info=info,
                       extra_files=ngc_images.stage_files() if res.ngc else None,
                       extra_units=(ngc_images.LOAD_UNIT,) if res.ngc else ())
    return st


def build_rootfs(res: Resolved, ctx: Context, st: Path, rootfs: Path, work: Path) -> None:
    """mmdebstrap the base + kernel + cloud-init, then run provision.sh in the chroot (the recipe Packer runs too)."""
    k = res.kernel
    kernel_pkg = f"{k.image_package}={k.version}" if k.version else k.image_package
    include = ",".join(BASE_PACKAGES + (kernel_pkg,) + res.image.packages + (ngc_images.PACKAGES if res.ngc else ()))
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory", f"--include={include}",
            "--aptopt=Acquire::Retries=3"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    argv += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
    argv += [
        "--customize-hook=echo gpuforge > \"$1/etc/hostname\"",
        *(ngc_images.rootfs_hooks(work / "ngc") if res.ngc else ()),
        # Hooks are shell (sh -c) or shellwords (copy-in): every path is quoted, whatever --dist says.
        f"--customize-hook=copy-in {shlex.quote(str(st))} /tmp",
        f"--customize-hook=chroot \"$1\" sh /tmp/{shlex.quote(st.name)}/provision.sh /tmp/{shlex.quote(st.name)}",
        f"--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}}\\t${{Version}}\\n' > {shlex.quote(str(work / 'packages.tsv'))}",
        "--customize-hook=rm -rf \"$1/tmp/\"*",
        res.image.suite, str(rootfs),
    ] + _sources(res, ctx)
    r = subp.run(argv, timeout=3600, check=False)
    write_text(work / "mmdebstrap.log", r.stdout + r.stderr)
    if r.returncode != 0:
        raise CommandError(argv, r.returncode, r.stdout, r.stderr)
    vmlinuz = rootfs / "boot" / f"vmlinuz-{k.abi}"
    if not vmlinuz.exists():
        raise GpuforgeError(f"kernel {k.abi} is not in the root filesystem (/boot has: "
                            f"{', '.join(p.name for p in (rootfs / 'boot').iterdir())})")


def read_packages(work: Path) -> dict:
    out = {}
    for line in (work / "packages.tsv").read_text().splitlines():
        if "\t" in line:
            n, v = line.split("\t", 1)
            out[n] = v
    return out


def finalize_disk_tree(rootfs: Path, root_uuid: str, cmdline: str, title: str) -> None:
    """What only the disk needs: fstab with the root by UUID, GRUB config and modules (netboot's squashfs has none)."""
    write_text(rootfs / "etc/fstab", f"# gpuforge disk image\nUUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    disk.prepare_boot_dir(rootfs, root_uuid, cmdline, title)


def write_manifest(res: Resolved, ctx: Context, out: Path, key: str, inputs: dict, packages: dict, t_start: float,
                   ngc: Sequence[dict] = ()) -> dict:
    files = {}
    for p in sorted(out.iterdir()):
        if p.is_file() and p.name != "manifest.json":
            files[p.name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    absent = [p for p in res.drivers if p.status is DriverStatus.ABSENT]
    m = {
        "schema_version": 1,
        "image": res.image.name,
        "cache_key": key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - t_start, 1),
        "steps": ctx.timings,
        "definition": json.loads(res.image.to_json()),
        "suite": res.image.suite,
        "kernel": {"abi": res.kernel.abi, "package": res.kernel.image_package,
                   "version": packages.get(res.kernel.image_package, "")},
        "drivers": [{"ref": p.ref, "flavour": p.flavour, "package": p.package, "status": p.status.value,
                     "version": packages.get(p.package), "reason": p.reason or None} for p in res.drivers],
        "drivers_note": ("image built WITHOUT NVIDIA drivers: " + "; ".join(p.reason for p in absent)) if absent else None,
        "tuning": {"name": res.tuning.name, "sha256": res.tuning.sha256,
                   "cmdline": list(stage.kernel_cmdline(res.image, res.tuning)),
                   "sysctl": dict(res.tuning.sysctl)},
        "packages": packages,
        "ngc_images": list(ngc),  # pulled digest, image id, size, tarball path/size/sha256 in the image
        "files": files,
        "inputs": inputs,
    }
    write_text(out / "manifest.json", json.dumps(m, indent=2, sort_keys=False) + "\n")
    return m


def build_image(image: ImageDef, ctx: Context) -> dict:
    """The runbook. Returns the manifest (cached or new). Bad references raise UserError before any output exists."""
    t0 = time.monotonic()
    res = resolve(image, ctx)
    if res.ngc:
        res = replace(res, ngc=ngc_images.pin(res.ngc, ngc_images.connect(res.ngc)))
    for p in res.drivers:
        if p.status is DriverStatus.ABSENT:
            log.warning("%s: driver %s not included: %s", image.name, p.ref, p.reason)
    inputs = cache_inputs(res, ctx)
    key = cache_key(inputs)
    out_dir = ctx.images_dir / image.name
    cached = None if ctx.force else cached_manifest(out_dir, key)
    if cached:
        say("==> %s: cached (key %s), nothing to rebuild", image.name, key[:12])
        return dict(cached, cached=True)
    ctx.images_dir.mkdir(parents=True, exist_ok=True)
    with _image_lock(ctx.images_dir, image.name):
        cached = None if ctx.force else cached_manifest(out_dir, key)  # another builder may have just made it
        if cached:
            return dict(cached, cached=True)
        say("==> %s: building (changed: %s)", image.name, "; ".join(changed_inputs(out_dir, inputs)))
        _remove_stale_partials(ctx.images_dir, image.name)
        last = manifest_entry(out_dir)
        ctx.last_timings = dict(last.steps) if last else {}
        return _build_locked(res, ctx, key, inputs, out_dir, t0)


def _image_lock(images_dir: Path, name: str) -> FileLock:
    """One builder per image and dist/ at a time (a second one waits, then finds the cache hit)."""
    return FileLock(images_dir / f".{name}.lock", what=f"image {name} in {images_dir}")


def _remove_stale_partials(images_dir: Path, name: str) -> None:
    """Work folders of killed builds (never trusted, only in the way)."""
    for p in images_dir.glob(f".{name}.partial-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in images_dir.glob(f".{name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _build_locked(res: Resolved, ctx: Context, key: str, inputs: dict, out_dir: Path, t0: float) -> dict:
    image = res.image
    work = ctx.images_dir / f".{image.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        out = work / "out"
        out.mkdir()
        rootfs = work / "rootfs"
        with step(ctx, "stage: tuning files, validator .deb, provision.sh"):
            st = make_stage(res, ctx, work)
        ngc: list = []
        if res.ngc:
            with step(ctx, f"ngc: pull {len(res.ngc)} image(s){' via ' + ctx.ngc_mirror if ctx.ngc_mirror else ''}, docker save"):
                ngc = ngc_images.pull_and_save(res.ngc, ngc_images.connect(res.ngc), work / "ngc")
        with step(ctx, f"rootfs: mmdebstrap {image.suite} + {res.kernel.abi} + provision"):
            build_rootfs(res, ctx, st, rootfs, work)
        packages = read_packages(work)
        cmdline = " ".join(stage.kernel_cmdline(image, res.tuning))
        k = res.kernel.abi
        if "netboot" in image.formats:
            with step(ctx, "netboot: vmlinuz, initrd, squashfs, boot.ipxe"):
                netboot.build_bundle(rootfs, k, cmdline, out)
        if "raw" in image.formats or "qcow2" in image.formats:
            root_uuid = str(uuid.uuid4())
            finalize_disk_tree(rootfs, root_uuid, cmdline, f"gpuforge {image.name} ({k})")
            raw = out / f"{image.name}.raw"
            with step(ctx, f"disk: GPT raw {image.disk_size} (BIOS + UEFI GRUB)"):
                disk.build_raw_disk(raw, image.disk_bytes, rootfs, root_uuid, work)
            if "qcow2" in image.formats:
                with step(ctx, "qcow2"):
                    disk.to_qcow2(raw, out / f"{image.name}.qcow2")
            if "raw" not in image.formats:
                raw.unlink()
        with step(ctx, "manifest"):
            manifest = write_manifest(res, ctx, out, key, inputs, packages, t0, ngc)
        # Swap the finished folder into place: readers see the old image or the new one, never half of one.
        old = ctx.images_dir / f".{image.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        out.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(manifest, cached=False)
