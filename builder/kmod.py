"""Build one matrix cell: exact headers + module source in a container, compile, strip, sign, verify, package.

Runbook per cell (each a timed step): apt -> extract -> compile -> strip -> [sign] -> verify -> package -> publish.
The container comes from builder.buildenv (our own Debian base image); commands run in it through the docker SDK.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from builder import debpkg
from builder.buildenv import BaseImageSpec, ImageRef, kmod_buildenv_spec
from builder.matrix import Cell
from validator import atomic
from validator.errors import GpuforgeError

log = logging.getLogger("gpuforge.kmod")

# Bump when the steps below change what they produce: part of every cache key.
RECIPE_REVISION = 1
STAGE = "/gf/out"


class StepFailed(GpuforgeError):
    """A build step failed inside the container: which step, the first error line, the output tail."""

    def __init__(self, step: str, first_error: str, output: str = ""):
        super().__init__(f"{step}: {first_error}")
        self.step = step
        self.first_error = first_error
        self.output = output


@dataclass(frozen=True)
class BuildSettings:
    mirror: str
    security_mirror: str
    make_jobs: int = 2
    sign_key: Optional[str] = None
    sign_cert: Optional[str] = None


@dataclass
class CellResult:
    cell_id: str
    status: str  # built | cached | failed
    seconds: float
    package: str = ""
    deb: str = ""  # path relative to dist/
    error: str = ""  # first error line (compiler or apt) when failed
    step: str = ""  # the step that failed
    steps: Dict[str, float] = field(default_factory=dict)
    log: str = ""
    changed: Tuple[str, ...] = ()  # cache inputs that differ from the last build of this cell
    cached: bool = False  # a failure remembered from an earlier run with the same key
    expected: str = ""  # the matrix's reason when this failure was expected (expected_failures)
    bad_input: str = ""  # "file: key: ..." when the failure is a definition naming what the archive lacks

    def to_dict(self) -> dict:
        return dict(self.__dict__, changed=list(self.changed))


# ---------------------------------------------------------------- cache key (pure)


def base_spec(cell: Cell, settings: BuildSettings) -> BaseImageSpec:
    return kmod_buildenv_spec(cell.kernel.build_suite, settings.mirror, settings.security_mirror)


def _file_sha(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_manifest(cell: Cell, base_image_id: str, settings: BuildSettings, sign_cert_sha: Optional[str] = None) -> dict:
    """Every input that decides the .deb's bytes, named so a changed key can say what changed."""
    k, d, f = cell.kernel, cell.driver, cell.flavour_def
    recipe = json.dumps([RECIPE_REVISION, debpkg.PACKAGING_REVISION, _SCRIPTS], sort_keys=True)
    return {
        "recipe": hashlib.sha256(recipe.encode()).hexdigest(),
        "source": f.source.pin(),
        "headers": f"{k.headers}={k.version}",
        "image": f"{k.image}={k.version}",
        "base_image": base_image_id,
        "package": debpkg.package_name(cell),
        "depends": list(f.depends) + list(d.userspace),
        "module_prefix": f.module_prefix,
        "conflicts": list(d.conflicts),
        "provides": f.provides,
        "signing_cert": sign_cert_sha,
    }


def cache_key(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def changed_inputs(old: Optional[dict], new: dict) -> Tuple[str, ...]:
    """Names of the inputs whose value differs (mkosi-style 'why did this rebuild')."""
    if not old:
        return ("no previous build",)
    return tuple(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


def archive_mismatch(cell: Cell, apt_output: str) -> str:
    """'file: key: ...' when apt says a pinned package/version is not in the archive (bad input, exit 2), else ''."""
    k, d, f = cell.kernel, cell.driver, cell.flavour_def
    for m in re.finditer(r"E: Version '([^']+)' for '([^']+)' was not found", apt_output):
        ver, pkg = m.groups()
        if pkg == f.source.name:
            return f"{d.file}: flavours.{cell.flavour}.source.version: {pkg}={ver} is not in the archive ({d.suite})"
        if pkg in (k.headers, k.image):
            return f"{k.file}: version: {pkg}={ver} is not in the archive ({k.suite})"
    for m in re.finditer(r"E: Unable to locate package (\S+)", apt_output):
        pkg = m.group(1)
        if pkg in (k.headers, k.image):
            return f"{k.file}: abi: {pkg} is not in the archive ({k.suite})"
        if pkg == f.source.name:
            return f"{d.file}: flavours.{cell.flavour}.source.package: {pkg} is not in the archive ({d.suite})"
    return ""


def first_error_line(text: str) -> str:
    """The first compiler error (file:line: error: ...), else apt's 'E:' line, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pat in (r"\berror:", r" : Depends: ", r"^E: ", r"\bError\b", r"(?i)\bfailed\b"):
        for ln in lines:
            if re.search(pat, ln):
                return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


# ---------------------------------------------------------------- step scripts (part of the recipe hash)

_SCRIPTS = {
    "apt": """set -eu
export DEBIAN_FRONTEND=noninteractive INITRD=No
printf '%s\\n' {sources} > /etc/apt/sources.list.d/gpuforge-cell.list
printf '%s\\n' {pins} > /etc/apt/preferences.d/gpuforge-cell
apt-get update -q
apt-get install -y -q --no-install-recommends {headers_pin}
mkdir -p /gf/dl && cd /gf/dl && apt-get download -q {source_pin} {image_pin}
dpkg-query -W -f '${{Package}}=${{Version}}\\n' {headers} {kbuild}
""",
    "extract": """set -eu
mkdir -p /gf/src /gf/build /gf/kroot
dpkg-deb -x /gf/dl/{source}_*.deb /gf/src
tar -xf /gf/src/usr/src/*.tar.xz -C /gf/build
dpkg-deb -x /gf/dl/{image}_*.deb /gf/kroot
# merged-/usr kernels ship usr/lib/modules: depmod -b wants <root>/lib/modules
if [ ! -e /gf/kroot/lib ] && [ -d /gf/kroot/usr/lib ]; then ln -s usr/lib /gf/kroot/lib; fi
ls -d /gf/build/modules/*/
""",
    # Pass KERNEL_UNAME, not SYSSRC: Debian splits headers into -common and the flavour directory.
    "compile": """cd /gf/build/modules/*/ || exit 1
make -j{make_jobs} KERNEL_UNAME={abi} modules > /gf/compile.log 2>&1
rc=$?
if [ $rc -ne 0 ]; then grep -m1 -E 'error:' /gf/compile.log; tail -n 25 /gf/compile.log; fi
exit $rc
""",
    "strip": """set -eu
cd /gf/build/modules/*/
dest={stage}/lib/modules/{abi}/{subdir}
mkdir -p "$dest"
# Debian's file names: nvidia.ko -> {prefix}.ko, nvidia-uvm.ko -> {prefix}-uvm.ko (modprobe.d maps them back)
find . -name '*.ko' | sort | while read -r ko; do b=$(basename "$ko"); strip --strip-debug -o "$dest/{prefix}${{b#nvidia}}" "$ko"; done
ls -l "$dest"
""",
    "sign": """set -eu
sf=/usr/src/linux-headers-{abi}/scripts/sign-file
[ -x "$sf" ] || sf=/usr/lib/{kbuild}/scripts/sign-file
for ko in {stage}/lib/modules/{abi}/{subdir}/*.ko; do "$sf" sha256 /gf/keys/signing.key /gf/keys/signing.crt "$ko"; done
""",
    "verify": """set -eu
dest={stage}/lib/modules/{abi}/{subdir}
for ko in "$dest"/*.ko; do echo "vermagic $(basename "$ko") $(modinfo -F vermagic "$ko")"; echo "signer $(basename "$ko") $(modinfo -F signer "$ko")"; done
mkdir -p /gf/kroot/lib/modules/{abi}/{subdir}
cp "$dest"/*.ko /gf/kroot/lib/modules/{abi}/{subdir}/
# Debian's linux-image ships a placeholder System.map (the real one is in -dbg): check against the
# headers' Module.symvers instead, which also catches symbol CRC (modversions) mismatches.
depmod -b /gf/kroot -e -E /usr/src/linux-headers-{abi}/Module.symvers {abi} 2>&1
grep -E '^[^:]*{subdir}/' /gf/kroot/lib/modules/{abi}/modules.dep | sed 's/^/dep /'
""",
}


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def cell_sources(cell: Cell, settings: BuildSettings) -> Tuple[List[str], List[str]]:
    """apt source lines and pins for suites the base image lacks (backports, or trixie sources on bookworm)."""
    base = cell.kernel.build_suite
    have = {base, f"{base}-updates", f"{base}-security"}
    comps = "main contrib non-free non-free-firmware"
    lines, pins = [], []
    for suite in dict.fromkeys([cell.kernel.suite, cell.driver.suite]):
        if suite in have:
            continue
        mirror = settings.security_mirror if suite.endswith("-security") else settings.mirror
        lines.append(f"deb {mirror} {suite} {comps}")
        # Foreign suites only for what we pin by exact version: never upgrade the toolchain from them.
        pins += ["Package: *", f"Pin: release n={suite}", "Pin-Priority: 100", ""]
    return lines, pins


def render(step: str, cell: Cell, settings: BuildSettings) -> str:
    k, f = cell.kernel, cell.flavour_def
    lines, pins = cell_sources(cell, settings)
    return _SCRIPTS[step].format(
        sources=" ".join(_q(x) for x in lines) or "''", pins=" ".join(_q(x) for x in pins) or "''",
        headers_pin=f"{k.headers}={k.version}", headers=k.headers, kbuild=k.kbuild,
        source_pin=f.source.pin(), source=f.source.name, image_pin=f"{k.image}={k.version}", image=k.image,
        make_jobs=settings.make_jobs, abi=k.abi, stage=STAGE, subdir=debpkg.MODULE_SUBDIR, prefix=f.module_prefix,
    )


def check_verify_output(abi: str, out: str) -> List[str]:
    """Problems found by the verify step: vermagic not this ABI, unresolved symbols, no module at all."""
    problems = []
    mods = 0
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("vermagic "):
            mods += 1
            got = parts[2] if len(parts) > 2 else ""
            if got != abi:
                problems.append(f"{parts[1]}: vermagic {got or '(none)'} != {abi}")
        elif ("needs unknown symbol" in line or "disagrees about version" in line) and debpkg.MODULE_SUBDIR in line:
            problems.append(line.strip())
    if mods == 0:
        problems.append("no kernel module was produced")
    return problems


# ---------------------------------------------------------------- running a cell


@dataclass
class CellContext:
    """State for one cell's build: the docker client, where outputs go, how to report progress."""

    client: Any  # docker.DockerClient (the SDK is a farm-side dependency)
    dist: Path
    settings: BuildSettings
    image: ImageRef
    progress: Callable[[str, str], None] = lambda cell_id, step: None


def _exec(container, script: str, step: str, timeout_note: str = "") -> str:
    res = container.exec_run(["bash", "-c", script], environment={"DEBIAN_FRONTEND": "noninteractive", "INITRD": "No"})
    out = res.output.decode("utf-8", "replace") if res.output else ""
    if res.exit_code != 0:
        raise StepFailed(step, first_error_line(out), out)
    return out


def _put_keys(container, key: str, cert: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for src, name in ((key, "keys/signing.key"), (cert, "keys/signing.crt")):
            data = Path(src).read_bytes()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o600
            tar.addfile(ti, io.BytesIO(data))
    container.exec_run(["mkdir", "-p", "/gf"])
    container.put_archive("/gf", buf.getvalue())


def _fetch_stage(container, dest: Path) -> None:
    stream, _ = container.get_archive(STAGE)
    with tempfile.TemporaryFile() as tmp:
        for chunk in stream:
            tmp.write(chunk)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(dest)  # noqa: S202 (our own container's output)


def build_cell(cell: Cell, ctx: CellContext, manifest: dict, key: str) -> CellResult:
    """Run the runbook for one cell; never raises for a build failure (returns status=failed)."""
    t0 = time.monotonic()
    steps: Dict[str, float] = {}
    logbuf: List[str] = []
    result = CellResult(cell.id, "failed", 0.0, package=manifest["package"])
    container = None
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=ctx.dist))
    try:
        container = ctx.client.containers.run(
            ctx.image.id, ["sleep", "infinity"], detach=True, network_mode="host",
            labels={"gpuforge.cell": cell.id, "gpuforge.dist": str(ctx.dist)},
            environment={"DEBIAN_FRONTEND": "noninteractive"},
        )
        names = ["apt", "extract", "compile", "strip"] + (["sign"] if ctx.settings.sign_key else []) + ["verify"]
        for name in names:
            ctx.progress(cell.id, name)
            s0 = time.monotonic()
            if name == "sign" and ctx.settings.sign_key and ctx.settings.sign_cert:
                _put_keys(container, ctx.settings.sign_key, ctx.settings.sign_cert)
            try:
                out = _exec(container, render(name, cell, ctx.settings), name)
            except StepFailed as e:
                logbuf.append(f"### {name} FAILED\n{e.output}")
                if name == "compile":
                    full = container.exec_run(["cat", "/gf/compile.log"]).output.decode("utf-8", "replace")
                    logbuf.append(f"### compile.log\n{full}")
                raise
            finally:
                steps[name] = round(time.monotonic() - s0, 1)
            logbuf.append(f"### {name} ({steps[name]}s)\n{out}")
            if name == "verify":
                problems = check_verify_output(cell.kernel.abi, out)
                if problems:
                    raise StepFailed("verify", problems[0], out)
        ctx.progress(cell.id, "package")
        s0 = time.monotonic()
        _fetch_stage(container, tmp)  # the archive's top folder is "out"
        root = tmp / "out"
        ctl = debpkg.control(cell, debpkg.installed_kib(root), key, ctx.image.id)
        deb = debpkg.build_deb(root, ctl, cell.kernel.abi, tmp)
        steps["package"] = round(time.monotonic() - s0, 1)
        ctx.progress(cell.id, "publish")
        result.deb = publish(deb, ctx.dist, ctl)
        result.status = "built"
    except StepFailed as e:
        result.error, result.step = e.first_error, e.step
        if e.step == "apt":
            result.bad_input = archive_mismatch(cell, e.output)
    except Exception as e:  # a broken cell must not stop the others: record and go on
        log.debug("cell %s crashed", cell.id, exc_info=True)
        result.error, result.step = f"{type(e).__name__}: {e}".splitlines()[0][:300], result.step or "internal"
        logbuf.append(f"### internal error\n{e}")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:
                log.warning("could not remove container for %s", cell.id)
        shutil.rmtree(tmp, ignore_errors=True)
    result.steps = steps
    result.seconds = round(time.monotonic() - t0, 1)
    logfile = ctx.dist / "logs" / f"{safe_name(cell.id)}.log"
    atomic.write_text(logfile, "\n".join(logbuf))
    result.log = str(logfile.relative_to(ctx.dist))
    return result


def safe_name(cell_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", cell_id)


def pool_path(ctl: debpkg.ControlInfo) -> str:
    name = ctl.get("Package")
    return f"apt/pool/main/{name[0]}/{name}/{name}_{ctl.get('Version')}_amd64.deb"


def publish(deb: Path, dist: Path, ctl: debpkg.ControlInfo) -> str:
    """Move the .deb into the pool under its final name (rename: a reader never sees half a file)."""
    rel = pool_path(ctl)
    dest = dist / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.move(str(deb), tmp)
    tmp.replace(dest)
    return rel
