"""Build one matrix cell: exact headers + module source in a container, compile, strip, sign, verify, package.

Per kernel ABI, once: a headers image (base image + the exact linux-headers installed + linux-image unpacked for
depmod), tagged by the hash of what went into it, so a cell pays for no apt update or headers install.
Runbook per cell (each a timed step): source -> extract -> compile -> strip -> [sign] -> verify -> package -> publish.
Every value that reaches a step script is schema-checked and shell-quoted; commands run through the docker SDK.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from builder import cache, debpkg
from builder.buildenv import BaseImageSpec, ImageRef, kmod_buildenv_spec
from builder.digest import sha256_file
from builder.matrix import Cell
from validator import atomic
from validator.errors import GpuforgeError

log = logging.getLogger("gpuforge.kmod")

# Bump when the steps below change what they produce: part of every cache key.
RECIPE_REVISION = 2
STAGE = "/gf/out"
HEADERS_REPOSITORY = "gpuforge/kmod-headers"
# Steps whose apt output may say a pinned package/version is not in the archive (bad input, exit 2).
ARCHIVE_STEPS = ("headers", "source")


class CellStatus(str, enum.Enum):
    BUILT = "built"
    CACHED = "cached"
    FAILED = "failed"


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
    status: CellStatus
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

    def __post_init__(self):
        self.status = CellStatus(self.status)

    def to_dict(self) -> dict:
        return dict(self.__dict__, status=self.status.value, changed=list(self.changed))


# ---------------------------------------------------------------- cache key (pure)


def base_spec(cell: Cell, settings: BuildSettings) -> BaseImageSpec:
    return kmod_buildenv_spec(cell.kernel.build_suite, settings.mirror, settings.security_mirror)


def cache_manifest(cell: Cell, base_image_id: str, settings: BuildSettings, sign_cert_sha: Optional[str] = None) -> dict:
    """Every input that decides the .deb's bytes, named so a changed key can say what changed."""
    k, d, f = cell.kernel, cell.driver, cell.flavour_def
    recipe = json.dumps([RECIPE_REVISION, debpkg.PACKAGING_REVISION, _SCRIPTS, _HEADERS_SCRIPT], sort_keys=True)
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


def signing_cert_sha(path: Optional[str]) -> Optional[str]:
    """The module-signing certificate's sha256 (part of the key: other cert, other modules)."""
    return sha256_file(Path(path)) if path else None


cache_key = cache.cache_key
changed_inputs = cache.changed_inputs


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

# Values are inserted shell-quoted (q); the few inside double quotes (abi, prefix, subdir) are schema-restricted
# to [A-Za-z0-9.+-] and re-checked by render().
_HEADERS_SCRIPT = """set -eu
export DEBIAN_FRONTEND=noninteractive INITRD=No
printf '%s\\n' {sources} > /etc/apt/sources.list.d/gpuforge-kernel.list
printf '%s\\n' {pins} > /etc/apt/preferences.d/gpuforge-kernel
apt-get update -q
apt-get install -y -q --no-install-recommends {headers_pin}
mkdir -p /gf/dl /gf/kroot && cd /gf/dl && apt-get download -q {image_pin}
dpkg-deb -x /gf/dl/{image}_*.deb /gf/kroot && rm -f /gf/dl/*.deb
# merged-/usr kernels ship usr/lib/modules: depmod -b wants <root>/lib/modules
if [ ! -e /gf/kroot/lib ] && [ -d /gf/kroot/usr/lib ]; then ln -s usr/lib /gf/kroot/lib; fi
apt-get clean
dpkg-query -W -f '${{Package}}=${{Version}}\\n' {headers} {kbuild}
"""

_SCRIPTS = {
    # The lists in the headers image are enough unless the driver comes from another suite; a stale list retries.
    "source": """set -eu
export DEBIAN_FRONTEND=noninteractive
mkdir -p /gf/dl && cd /gf/dl
if ! ls /gf/dl/{source}_*.deb >/dev/null 2>&1; then
  printf '%s\\n' {sources} > /etc/apt/sources.list.d/gpuforge-driver.list
  printf '%s\\n' {pins} > /etc/apt/preferences.d/gpuforge-driver
  {update}
  apt-get download -q {source_pin} || {{ apt-get update -q && apt-get download -q {source_pin}; }}
fi
ls /gf/dl
""",
    # Streamed: the source tarball inside the .deb goes straight to tar, never written out.
    "extract": """set -eu
mkdir -p /gf/build
dpkg-deb --fsys-tarfile /gf/dl/{source}_*.deb | tar -xO --wildcards './usr/src/*.tar.xz' | tar -xJ -C /gf/build
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
for ko in "$dest"/*.ko; do
  echo "vermagic $(basename "$ko") $(modinfo -F vermagic "$ko")"; echo "signer $(basename "$ko") $(modinfo -F signer "$ko")"
done
mkdir -p /gf/kroot/lib/modules/{abi}/{subdir}
cp "$dest"/*.ko /gf/kroot/lib/modules/{abi}/{subdir}/
# Debian's linux-image ships a placeholder System.map (the real one is in -dbg): check against the
# headers' Module.symvers instead, which also catches symbol CRC (modversions) mismatches.
depmod -b /gf/kroot -e -E /usr/src/linux-headers-{abi}/Module.symvers {abi} 2>&1
grep -E '^[^:]*{subdir}/' /gf/kroot/lib/modules/{abi}/modules.dep | sed 's/^/dep /'
""",
}


def _foreign_sources(build_suite: str, suites, settings: BuildSettings) -> Tuple[List[str], List[str]]:
    """apt source lines and pins for suites the base image lacks (backports, or trixie sources on bookworm)."""
    have = {build_suite, f"{build_suite}-updates", f"{build_suite}-security"}
    comps = "main contrib non-free non-free-firmware"
    lines: List[str] = []
    pins: List[str] = []
    for suite in dict.fromkeys(suites):
        if suite in have:
            continue
        mirror = settings.security_mirror if suite.endswith("-security") else settings.mirror
        lines.append(f"deb {mirror} {suite} {comps}")
        # Foreign suites only for what we pin by exact version: never upgrade the toolchain from them.
        pins += ["Package: *", f"Pin: release n={suite}", "Pin-Priority: 100", ""]
    return lines, pins


def cell_sources(cell: Cell, settings: BuildSettings) -> Tuple[List[str], List[str]]:
    """Foreign suites a cell needs: its kernel's and its driver's."""
    return _foreign_sources(cell.kernel.build_suite, [cell.kernel.suite, cell.driver.suite], settings)


_PLAIN = re.compile(r"^[A-Za-z0-9.+_/-]+$")


def _values(cell: Cell, settings: BuildSettings, suites) -> Dict[str, str]:
    k, f = cell.kernel, cell.flavour_def
    plain = {"abi": k.abi, "prefix": f.module_prefix, "subdir": debpkg.MODULE_SUBDIR, "stage": STAGE, "kbuild": k.kbuild}
    for name, v in plain.items():  # these sit inside double quotes: only plain words may get there
        if not _PLAIN.match(v):
            raise GpuforgeError(f"{name} {v!r} is not a plain word (schema should have refused it)")
    lines, pins = _foreign_sources(k.build_suite, suites, settings)
    q = shlex.quote
    return dict(
        plain, sources=" ".join(q(x) for x in lines) or "''", pins=" ".join(q(x) for x in pins) or "''",
        headers_pin=q(f"{k.headers}={k.version}"), headers=q(k.headers),
        source_pin=q(f.source.pin()), source=q(f.source.name), image_pin=q(f"{k.image}={k.version}"), image=q(k.image),
        make_jobs=str(int(settings.make_jobs)), update="apt-get update -q" if lines else ":",
    )


def render(step: str, cell: Cell, settings: BuildSettings) -> str:
    """A cell step's script, every value quoted (the source step adds only the driver's foreign suite)."""
    return _SCRIPTS[step].format(**_values(cell, settings, [cell.driver.suite]))


def render_headers(cell: Cell, settings: BuildSettings) -> str:
    """The headers image's script (the kernel's foreign suite only)."""
    return _HEADERS_SCRIPT.format(**_values(cell, settings, [cell.kernel.suite]))


def headers_image_tag(cell: Cell, base: ImageRef, settings: BuildSettings) -> str:
    """gpuforge/kmod-headers:<abi>-<hash>: the hash covers the base image, the exact pins and the script."""
    blob = json.dumps([base.id, render_headers(cell, settings)], sort_keys=True).encode()
    abi = re.sub(r"[^A-Za-z0-9_.-]", "_", cell.kernel.abi)  # docker tags have no '+'
    return f"{HEADERS_REPOSITORY}:{abi}-{hashlib.sha256(blob).hexdigest()[:16]}"


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
    image: ImageRef  # the cell's headers image (base + exact headers + unpacked linux-image)
    progress: Callable[[str, str], None] = lambda cell_id, step: None


def _exec(container, script: str, step: str) -> str:
    res = container.exec_run(["bash", "-c", script], environment={"DEBIAN_FRONTEND": "noninteractive", "INITRD": "No"})
    out = res.output.decode("utf-8", "replace") if res.output else ""
    if res.exit_code != 0:
        raise StepFailed(step, first_error_line(out), out)
    return out


def _put_files(container, dest: str, files: Dict[str, bytes], mode: int = 0o644) -> None:
    """Copy in-memory files into the container under dest (a tar stream through the docker API)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), mode
            tar.addfile(ti, io.BytesIO(data))
    container.exec_run(["mkdir", "-p", dest])
    container.put_archive(dest, buf.getvalue())


def _put_keys(container, key: str, cert: str) -> None:
    _put_files(container, "/gf", {"keys/signing.key": Path(key).read_bytes(), "keys/signing.crt": Path(cert).read_bytes()},
               0o600)


def extract_tar(fileobj, dest: Path) -> None:
    """Unpack a tar stream under dest only: tarfile's data filter refuses absolute and '..' members, links that
    point out and device files (Python 3.9.17+, 3.10.12+, 3.11.4+)."""
    if not hasattr(tarfile, "data_filter"):
        raise GpuforgeError("this Python's tarfile has no data filter: use Python 3.9.17+, 3.10.12+ or 3.11.4+")
    with tarfile.open(fileobj=fileobj) as tar:
        tar.extractall(Path(dest), filter="data")


def _fetch_stage(container, dest: Path) -> None:
    stream, _ = container.get_archive(STAGE)
    with tempfile.TemporaryFile() as tmp:
        for chunk in stream:
            tmp.write(chunk)
        tmp.seek(0)
        extract_tar(tmp, dest)


def source_cache_dir() -> Path:
    """Module source packages downloaded on this host, shared by every dist: $GPUFORGE_CACHE, else ~/.cache/gpuforge."""
    root = os.environ.get("GPUFORGE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                            os.path.expanduser("~/.cache"), "gpuforge")
    return Path(root) / "src"


def _source_cache(dist: Path, cell: Cell) -> Path:
    """The exact source version's .deb (apt verified it when it was downloaded; its sha256 is kept beside it)."""
    src = cell.flavour_def.source
    return source_cache_dir() / f"{src.name}_{src.version.replace(':', '%3a')}.deb"


def _cached_source(path: Path) -> Optional[bytes]:
    try:
        data, want = path.read_bytes(), path.with_suffix(".sha256").read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == want else None


def _fetch_source(container, cell: Cell, ctx: CellContext) -> str:
    cached = _source_cache(ctx.dist, cell)
    data = _cached_source(cached)
    if data is not None:
        _put_files(container, "/gf/dl", {cached.name: data})
    out = _exec(container, render("source", cell, ctx.settings), "source")
    if data is None:
        stream, _ = container.get_archive("/gf/dl")
        with tempfile.TemporaryDirectory(dir=ctx.dist) as tmp, tempfile.TemporaryFile() as buf:
            for chunk in stream:
                buf.write(chunk)
            buf.seek(0)
            extract_tar(buf, Path(tmp))
            debs = sorted(Path(tmp).rglob(f"{cell.flavour_def.source.name}_*.deb"))
            if debs:
                blob = debs[0].read_bytes()
                atomic.write_text(cached.with_suffix(".sha256"), hashlib.sha256(blob).hexdigest() + "\n")
                atomic.write_bytes(cached, blob)
    return out


def build_headers_image(cell: Cell, base: ImageRef, settings: BuildSettings, client) -> ImageRef:
    """The per-ABI image: base + exact headers installed + linux-image unpacked in /gf/kroot (found by tag if made)."""
    from builder.buildenv import find_image

    tag = headers_image_tag(cell, base, settings)
    found = find_image(client, tag)
    if found:
        return found
    container = client.containers.run(base.id, ["sleep", "infinity"], detach=True, network_mode="host",
                                      labels={"gpuforge.headers": cell.kernel.abi})
    try:
        _exec(container, render_headers(cell, settings), "headers")
        repo, t = tag.split(":", 1)
        container.commit(repository=repo, tag=t, changes=['CMD ["/bin/bash"]'])
    finally:
        container.remove(force=True)
    made = find_image(client, tag)
    if not made:
        raise GpuforgeError(f"docker commit did not produce {tag}")
    return made


def build_cell(cell: Cell, ctx: CellContext, manifest: dict, key: str) -> CellResult:
    """Run the runbook for one cell; never raises for a build failure (returns status=failed)."""
    t0 = time.monotonic()
    steps: Dict[str, float] = {}
    logbuf: List[str] = []
    result = CellResult(cell.id, CellStatus.FAILED, 0.0, package=manifest["package"])
    container = None
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=ctx.dist))
    try:
        container = ctx.client.containers.run(
            ctx.image.id, ["sleep", "infinity"], detach=True, network_mode="host",
            labels={"gpuforge.cell": cell.id, "gpuforge.dist": str(ctx.dist)},
            environment={"DEBIAN_FRONTEND": "noninteractive"},
        )
        names = ["source", "extract", "compile", "strip"] + (["sign"] if ctx.settings.sign_key else []) + ["verify"]
        for name in names:
            ctx.progress(cell.id, name)
            s0 = time.monotonic()
            if name == "sign" and ctx.settings.sign_key and ctx.settings.sign_cert:
                _put_keys(container, ctx.settings.sign_key, ctx.settings.sign_cert)
            try:
                out = _fetch_source(container, cell, ctx) if name == "source" else \
                    _exec(container, render(name, cell, ctx.settings), name)
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
        result.status = CellStatus.BUILT
    except StepFailed as e:
        result.error, result.step = e.first_error, e.step
        if e.step in ARCHIVE_STEPS:
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
    write_log(ctx.dist, result, "\n".join(logbuf))
    return result


def write_log(dist: Path, result: CellResult, text: str) -> None:
    logfile = dist / "logs" / f"{safe_name(result.cell_id)}.log"
    atomic.write_text(logfile, text)
    result.log = str(logfile.relative_to(dist))


safe_name = cache.safe_name


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
