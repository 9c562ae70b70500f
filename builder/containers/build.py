"""`gpuforge build containers`: the runbook. Per built kmod cell, one driver image FROM our own Debian base.

    resolve   each cell's kmod .deb in dist/apt (none built: bad input, nothing starts)
    base      gpuforge/driver-base:<suite>-<hash>      mmdebstrap + docker import (builder.buildenv)
    runtime   gpuforge/driver-runtime:<suite>-<hash>   the base without apt lists, perl, iconv modules: one layer,
                                                       shared by every driver image of that suite
    per image install (kmod .deb + the user space apt resolves at exactly its version) -> verify -> finalize
              -> commit (one layer: kmod + user space + entrypoint; labels) -> tag -> sizes
    push      (--push) each tag whose digest the registry lacks
    k8s       (--k8s DIR) one DaemonSet per kernel ABI

Cached on inputs (dist/containers/cache/<cell>.json + the image record dist/containers/<cell>.json): the same kmod,
recipe, entrypoint and runtime image give the same image, which is only re-tagged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from builder import debpkg, kmod
from builder.buildenv import BaseImageSpec, ImageRef, docker_client, ensure_base_image, find_image
from builder.cache import Artifact, CacheEntry, Store, cache_key, changed_inputs, safe_name
from builder.config import Settings
from builder.containers import recipe, registry as reg
from builder.containers.spec import ImageSpec, Kmod, Verified, cache_inputs, image_env, image_spec, labels, parse_registry
from builder.digest import sha256_file
from builder.lock import FileLock
from builder.matrix import Cell
from builder.steps import say, step
from validator import atomic, userfile
from validator.errors import GpuforgeError, UserError
from validator.precompiled import pin_text, read_deb

log = logging.getLogger("gpuforge.containers")


class StepFailed(GpuforgeError):
    def __init__(self, step: str, message: str, output: str = ""):
        super().__init__(f"{step}: {message}")
        self.step, self.first_error, self.output = step, message, output


@dataclass
class ImageResult:
    cell_id: str
    status: str  # built | cached | skipped | failed
    seconds: float = 0.0
    refs: Tuple[str, ...] = ()
    image_id: str = ""
    size: int = 0  # uncompressed bytes (all layers)
    compressed: int = 0  # gzip bytes of all layers: what a node pulls
    layer: int = 0  # bytes of the image's own layer: the kmod + user space it carries
    payload_kib: int = 0  # dpkg Installed-Size of the packages that layer added
    signed: bool = False
    pushed: Tuple[str, ...] = ()
    push_skipped: Tuple[str, ...] = ()
    error: str = ""
    step: str = ""
    changed: Tuple[str, ...] = ()
    steps: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__, refs=list(self.refs), pushed=list(self.pushed), push_skipped=list(self.push_skipped),
                    changed=list(self.changed))


@dataclass
class ContainerReport:
    results: List[ImageResult]
    seconds: float = 0.0
    registry: Optional[str] = None
    k8s: List[str] = field(default_factory=list)
    steps: Dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> List[ImageResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results], "seconds": self.seconds, "registry": self.registry,
                "k8s": self.k8s, "steps": self.steps}


@dataclass
class Context:
    """Paths, the engine and timings of one run (what is built is in the ImageSpecs)."""

    client: Any  # docker.DockerClient
    dist: Path
    settings: Settings
    rebuild: bool = False
    registry: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)
    runtime_packages: Dict[str, str] = field(default_factory=dict)  # runtime image id -> its dpkg-query lines

    @property
    def root(self) -> Path:
        return self.dist / "containers"

    @property
    def store(self) -> Store:
        return Store(self.root)

    @property
    def owner(self) -> str:
        """Names this dist's build containers, so a later run can sweep what a killed one left."""
        return "gpuforge-ctr-" + hashlib.sha256(str(self.dist).encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------------- resolve


def find_kmod(cell: Cell, dist: Path) -> Optional[Kmod]:
    """The cell's .deb where `gpuforge build drivers` publishes it, or None."""
    name, version = debpkg.package_name(cell), debpkg.package_version(cell)
    rel = kmod.pool_path(debpkg.ControlInfo((("Package", name), ("Version", version))))
    deb = Path(dist) / rel
    if not deb.is_file():
        return None
    return Kmod(rel, name, version, sha256_file(deb), deb.stat().st_size)


def resolve(cells: Sequence[Cell], dist: Path) -> Tuple[List[ImageSpec], List[ImageResult]]:
    """Specs for the cells with a built kmod; cells whose build failed as expected are skipped; any other cell
    without a kmod is bad input (UserError naming them and the command that builds them; nothing starts)."""
    specs, skipped, missing = [], [], []
    for cell in cells:
        found = find_kmod(cell, dist)
        if found:
            specs.append(image_spec(cell, found))
        elif cell.expect_fail:
            skipped.append(ImageResult(cell.id, "skipped", error=f"no kmod (its build fails as expected: {cell.expect_fail})"))
        else:
            missing.append(cell.id)
    if missing:
        raise UserError(f"no built kmod in {dist}/apt for: {', '.join(missing)}",
                        hint="run `gpuforge build drivers` first (same --dist and --only)")
    return specs, skipped


# ------------------------------------------------------------------------------------------- base and runtime


def base_spec(suite: str, settings: Settings) -> BaseImageSpec:
    """Our own mmdebstrap base for driver images (no registry pull)."""
    return BaseImageSpec(suite=suite, mirror=settings.mirror, security_mirror=settings.security_mirror,
                         packages=recipe.BASE_PACKAGES, repository="gpuforge/driver-base")


def runtime_tag(base: ImageRef, suite: str) -> str:
    digest = hashlib.sha256(f"{base.id}\n{recipe.recipe_sha256()}".encode()).hexdigest()
    return f"gpuforge/driver-runtime:{suite}-{digest[:16]}"


def ensure_runtime(ctx: Context, base: ImageRef, suite: str) -> ImageRef:
    """The base slimmed for running (no apt lists, perl, iconv modules), flattened to one layer so the removed
    files cost nothing; every driver image of the suite shares it."""
    tag = runtime_tag(base, suite)
    found = None if ctx.rebuild else find_image(ctx.client, tag)
    if found:
        return found
    container = ctx.client.containers.run(base.id, ["sleep", "infinity"], detach=True, network_mode="host",
                                          name=f"{ctx.owner}-runtime-{suite}")
    try:
        _exec(container, recipe.render(recipe.SLIM), "runtime")
        container.stop(timeout=1)
        ctx.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=ctx.root) as tmp:
            for chunk in ctx.client.api.export(container.id):
                tmp.write(chunk)
            tmp.seek(0)
            repo, t = tag.split(":", 1)
            ctx.client.api.import_image_from_data(
                tmp, repository=repo, tag=t,
                changes=["ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8", f'LABEL io.gpuforge.runtime.base="{base.id}"'])
    finally:
        container.remove(force=True)
    found = find_image(ctx.client, tag)
    if not found:
        raise GpuforgeError(f"docker import did not produce {tag}")
    return found


# ------------------------------------------------------------------------------------------- one image


def _exec(container, script: str, step_name: str) -> str:
    res = container.exec_run(["sh", "-c", script], environment={"DEBIAN_FRONTEND": "noninteractive"})
    out = res.output.decode("utf-8", "replace") if res.output else ""
    if res.exit_code != 0:
        raise StepFailed(step_name, kmod.first_error_line(out), out)
    return out


def _put(container, files: Dict[str, Tuple[bytes, int]]) -> None:
    """Files into the container's /gf (name -> (data, mode))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            ti = tarfile.TarInfo(f"gf/{name}")
            ti.size, ti.mode, ti.mtime = len(data), mode, int(time.time())
            tar.addfile(ti, io.BytesIO(data))
    container.put_archive("/", buf.getvalue())


def _driver_debian_version(pkg) -> str:
    """The Debian version of the user space the kmod pins with '=' (535.261.03-1)."""
    return next((v for v in pkg.exact if v.split("-")[0] == pkg.driver), pkg.exact[0] if pkg.exact else "")


def install_and_commit(ctx: Context, spec: ImageSpec, runtime: ImageRef, key: str, steps: Dict[str, float]):
    """Container from the runtime image; install, verify, finalize; commit one layer. Returns (image, Verified, packages)."""
    deb = ctx.dist / spec.kmod.rel
    pkg = read_deb(str(deb))
    name = f"{ctx.owner}-{safe_name(spec.cell_id)}"
    container = ctx.client.containers.run(runtime.id, ["sleep", "infinity"], detach=True, network_mode="host", name=name)
    try:
        t0 = time.monotonic()
        _put(container, {"kmod.deb": (deb.read_bytes(), 0o644),
                         "gpuforge-nvidia.pref": (pin_text(pkg).encode(), 0o644),
                         "gpuforge-driver": (recipe.ENTRYPOINT.read_bytes(), 0o755)})
        _exec(container, recipe.render(recipe.INSTALL, abi=spec.kernel), "install")
        steps["install"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        out = _exec(container, recipe.render(recipe.VERIFY, abi=spec.kernel, prefix=spec.module_prefix,
                                             driver=spec.driver), "verify")
        verified, problems = recipe.parse_verify(out, spec.kernel, _driver_debian_version(pkg), spec.module_prefix)
        if problems:
            raise StepFailed("verify", problems[0], out)
        packages = recipe.parse_packages(out, "pkg")
        steps["verify"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        _put(container, {"driver-image.env": (image_env(spec, verified).encode(), 0o644)})
        _exec(container, recipe.render(recipe.FINALIZE), "finalize")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lab = labels(spec, verified, key, created, runtime.tag, runtime.id)
        changes = [f"LABEL {k}={json.dumps(v)}" for k, v in lab.items()]
        # (commit takes no STOPSIGNAL: the default, SIGTERM, is what the entrypoint traps)
        changes += [f'ENTRYPOINT ["{recipe.ENTRYPOINT_IN_IMAGE}"]', 'CMD ["init"]']
        container.stop(timeout=1)
        repo, tag = spec.refs(None)[0].split(":", 1)
        image = container.commit(repository=repo, tag=tag, changes=changes,
                                 message=f"gpuforge: {spec.kmod.package} + NVIDIA user space {spec.driver}")
        steps["commit"] = round(time.monotonic() - t0, 1)
        return image, verified, packages
    finally:
        container.remove(force=True)


def tag_all(ctx: Context, image, spec: ImageSpec) -> Tuple[str, ...]:
    refs = tuple(dict.fromkeys(spec.refs(None) + (spec.refs(ctx.registry) if ctx.registry else ())))
    for ref in refs:
        repo, tag = ref.rsplit(":", 1)
        image.tag(repo, tag)
    return refs


def compressed_size(client, image_id: str) -> int:
    """gzip bytes of all the image's layers: what a push sends and a node pulls (gzip, default level), measured
    on the engine's own layer tars."""
    total = 0
    with tempfile.TemporaryFile() as tmp:
        for chunk in client.api.get_image(image_id):
            tmp.write(chunk)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            for member in tar:
                if not member.name.endswith("layer.tar"):
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                comp = zlib.compressobj(6, zlib.DEFLATED, 31)
                for block in iter(lambda: f.read(1 << 20), b""):
                    total += len(comp.compress(block))
                total += len(comp.flush())
    return total


def _cached(ctx: Context, spec: ImageSpec, key: str) -> Optional[dict]:
    """The image record when the cache entry matches and the engine still has that image."""
    entry = None if ctx.rebuild else ctx.store.hit(spec.cell_id, key)
    if entry is None or entry.artifact is None:
        return None
    try:
        rec = userfile.load_json(ctx.root / entry.artifact.path, "image record", top=dict)
        img = ctx.client.images.get(rec["image_id"])
    except Exception:  # record unreadable or image pruned: build again
        return None
    if img.labels.get("io.gpuforge.input-hash") != key:
        return None
    return dict(rec, _image=img)


def build_one(ctx: Context, spec: ImageSpec, runtime: ImageRef) -> ImageResult:
    """Cached, or built; never raises for a build failure (returns status=failed)."""
    t0 = time.monotonic()
    inputs = cache_inputs(spec, runtime.id, recipe.recipe_sha256(), sha256_file(recipe.ENTRYPOINT))
    key = cache_key(inputs)
    hit = _cached(ctx, spec, key)
    if hit:
        refs = tag_all(ctx, hit["_image"], spec)
        return ImageResult(spec.cell_id, "cached", round(time.monotonic() - t0, 1), refs, hit["image_id"], hit["size"],
                           hit["compressed"], hit["layer"], hit["payload_kib"], hit["signed"])
    old = ctx.store.read(spec.cell_id)
    result = ImageResult(spec.cell_id, "failed", changed=changed_inputs(old.inputs if old else None, inputs))
    steps: Dict[str, float] = {}
    try:
        with step(f"{spec.cell_id}: image {spec.refs(None)[0]}", ctx.timings):
            image, verified, packages = install_and_commit(ctx, spec, runtime, key, steps)
            result.refs = tag_all(ctx, image, spec)
            s0 = time.monotonic()
            compressed = compressed_size(ctx.client, image.id)
            steps["sizes"] = round(time.monotonic() - s0, 1)
        base_pkgs = {n for n, _, _ in recipe.parse_packages(_runtime_packages(ctx, runtime))}
        payload = sum(kib for n, _, kib in packages if n not in base_pkgs)
        result.status, result.image_id = "built", image.id
        result.size = int(ctx.client.images.get(image.id).attrs["Size"])
        result.compressed = compressed
        result.layer = int(ctx.client.api.history(image.id)[0]["Size"])  # the commit: kmod + user space + entrypoint
        result.payload_kib, result.signed = payload, verified.signed
        _record(ctx, spec, key, inputs, result, verified, packages, steps)
    except StepFailed as e:
        result.error, result.step = e.first_error, e.step
        _log(ctx, spec, f"### {e.step} FAILED\n{e.output}")
    except Exception as e:  # one image's failure never stops the others
        log.debug("image %s crashed", spec.cell_id, exc_info=True)
        text = getattr(e, "explanation", None) or str(e)  # docker's APIError: the engine's own words
        result.error, result.step = f"{type(e).__name__}: {text}".splitlines()[0][:300], result.step or "internal"
    result.steps = steps
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def _runtime_packages(ctx: Context, runtime: ImageRef) -> str:
    """The runtime image's packages (name, version, status, KiB), read once per run from a throwaway container."""
    memo = ctx.runtime_packages
    if runtime.id not in memo:
        out = ctx.client.containers.run(runtime.id, ["dpkg-query", "-W", "-f",
                                                     "${Package}\t${Version}\t${db:Status-Abbrev}\t${Installed-Size}\n"],
                                        remove=True, network_mode="none")
        memo[runtime.id] = out.decode("utf-8", "replace")
    return memo[runtime.id]


def _log(ctx: Context, spec: ImageSpec, text: str) -> None:
    atomic.write_text(ctx.root / "logs" / f"{safe_name(spec.cell_id)}.log", text)


def _record(ctx: Context, spec: ImageSpec, key: str, inputs: dict, r: ImageResult, verified: Verified,
            packages, steps: Dict[str, float]) -> None:
    """The image record (artifact) first, then the cache entry that trusts it."""
    rel = f"{safe_name(spec.cell_id)}.json"
    rec = {"cell": spec.cell_id, "key": key, "image_id": r.image_id, "refs": list(spec.refs(None)),
           "tags": list(spec.tags), "size": r.size, "compressed": r.compressed, "layer": r.layer,
           "payload_kib": r.payload_kib, "signed": verified.signed, "signer": verified.signer,
           "modules": list(verified.modules), "firmware": list(verified.firmware),
           "userspace": dict(verified.userspace), "packages": {n: v for n, v, _ in packages},
           "spec": spec.to_dict(), "steps": steps}
    atomic.write_text(ctx.root / rel, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    entry = CacheEntry(spec.cell_id, key, inputs, artifacts=(Artifact.record(ctx.root, rel),),
                       seconds=sum(steps.values()), steps=tuple(steps.items()))
    ctx.store.write(entry.stamped())


# ------------------------------------------------------------------------------------------- the run


def sweep(ctx: Context) -> None:
    """Build containers a killed run on this dist left behind (we hold the lock: none is in use)."""
    try:
        for c in ctx.client.containers.list(all=True, filters={"name": ctx.owner}):
            if c.name.startswith(ctx.owner):
                log.warning("removing leftover build container %s", c.name)
                c.remove(force=True)
    except Exception as e:  # best effort; the build does not depend on it
        log.warning("could not list leftover containers: %s", e)


def build_containers(cells: Sequence[Cell], settings: Settings, dist: Path, *, registry: Optional[str] = None,
                     push: bool = False, rebuild: bool = False, k8s_dir: Optional[Path] = None,
                     client=None) -> ContainerReport:
    """The runbook (module docstring). Bad input (no kmod, bad registry, registry down) raises before any build."""
    t0 = time.monotonic()
    dist = Path(dist).resolve()
    if push and not registry:
        raise UserError("--push needs --registry (where to push)", hint="e.g. --registry 127.0.0.1:5000/gpuforge")
    if registry:
        parse_registry(registry)  # a malformed reference is bad input before anything else
    specs, results = resolve(cells, dist)
    if k8s_dir is not None:
        from builder.containers import k8s

        k8s.check_one_per_kernel(specs)
    client = client or docker_client()
    ctx = Context(client, dist, settings, rebuild, registry)
    if push and registry:
        with step(f"registry {registry}: reachable", ctx.timings):
            reg.check_reachable(client, registry)
    ctx.root.mkdir(parents=True, exist_ok=True)
    with FileLock(ctx.root / ".lock", what=f"{ctx.root}"):
        sweep(ctx)
        runtimes: Dict[str, ImageRef] = {}
        for suite in dict.fromkeys(s.suite for s in specs):
            with step(f"base image for {suite} (mmdebstrap, no registry)", ctx.timings):
                base = ensure_base_image(base_spec(suite, settings), client, rebuild=rebuild)
            with step(f"runtime image for {suite}", ctx.timings):
                runtimes[suite] = ensure_runtime(ctx, base, suite)
        for spec in specs:
            r = build_one(ctx, spec, runtimes[spec.suite])
            results.append(r)
            if r.status == "cached":
                say("%s: cached (%s)", spec.cell_id, r.refs[0])
            elif r.status == "failed":
                say("%s: FAILED in %s: %s", spec.cell_id, r.step, r.error)
    report = ContainerReport(_in_order(cells, results), registry=registry, steps=ctx.timings)
    if push and registry:
        built = [r for r in report.results if r.status in ("built", "cached")]
        with step(f"push to {registry}", ctx.timings):
            for r in built:
                r.pushed, r.push_skipped = reg.push_refs(client, [x for x in r.refs if x.startswith(reg.prefix_of(registry))])
    if k8s_dir is not None:
        from builder.containers import k8s

        with step(f"DaemonSets in {k8s_dir}", ctx.timings):
            report.k8s = [str(p) for p in k8s.write_daemonsets(k8s_dir, specs, report.results, registry)]
    report.seconds = round(time.monotonic() - t0, 1)
    return report


def _in_order(cells: Sequence[Cell], results: List[ImageResult]) -> List[ImageResult]:
    order = {c.id: i for i, c in enumerate(cells)}
    return sorted(results, key=lambda r: order.get(r.cell_id, len(order)))


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n else "-"


def summary_table(report: ContainerReport) -> str:
    """Per image: result, time, uncompressed and compressed size, what it carries, and the ref (or the error)."""
    from builder.steps import fmt_seconds

    rows = [("CELL", "RESULT", "TIME", "SIZE", "COMPRESSED", "CARRIES", "IMAGE")]
    for r in report.results:
        if r.status in ("built", "cached"):
            extra = r.refs[0] + (f" (+{len(r.refs) - 1} tags)" if len(r.refs) > 1 else "")
            if r.pushed or r.push_skipped:
                extra += f"; pushed {len(r.pushed)}, already there {len(r.push_skipped)}"
            rows.append((r.cell_id, r.status, fmt_seconds(r.seconds), fmt_bytes(r.size), fmt_bytes(r.compressed),
                         fmt_bytes(r.layer), extra))
        else:
            rows.append((r.cell_id, r.status.upper() if r.status == "failed" else r.status, fmt_seconds(r.seconds),
                         "-", "-", "-", (f"{r.step}: " if r.step else "") + r.error))
    w = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(f"{c:<{w[i]}}" for i, c in enumerate(row[:6])) + "  " + row[6] for row in rows]
    n = {s: sum(1 for r in report.results if r.status == s) for s in ("built", "cached", "skipped", "failed")}
    lines.append(f"{n['built']} built, {n['cached']} cached, {n['skipped']} skipped, {n['failed']} failed")
    return "\n".join(line.rstrip() for line in lines)
