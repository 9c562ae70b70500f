"""`gpuforge build drivers`: build the selected cells (cached, isolated, in parallel), then publish dist/apt.

dist/ layout:
  apt/pool/main/g/<pkg>/<pkg>_<ver>_amd64.deb    the packages (kept across driver versions: rollback needs them)
  apt/dists/<codename>/...                       Packages, Release, InRelease (when a gpg key is set)
  apt/manifest.json                              per cell: cache key, inputs, deb, sha256
  cache/<cell>.json                              the cache entry a later run trusts (written after the deb)
  logs/<cell>.log                                each step's output; compile.log in full on failure
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from builder import aptrepo, kmod
from builder.buildenv import ImageRef, docker_client, ensure_base_image
from builder.cache import Artifact, CacheEntry, CacheStatus, Store
from builder.config import Settings
from builder.kmod import CellResult, CellStatus
from builder.lock import FileLock
from builder.matrix import Cell
from builder.steps import eta_text, fmt_seconds, step
from validator import atomic
from validator.errors import UserError

log = logging.getLogger("gpuforge.drivers")

# Failures of these steps depend only on the cache-key inputs (not on the network), so they are cached too.
DETERMINISTIC_STEPS = ("extract", "compile", "strip", "verify")

__all__ = ["BuildReport", "DistLock", "Progress", "build_drivers", "cache_hit", "fmt_seconds", "summary_table"]


@dataclass
class BuildReport:
    results: List[CellResult]
    repo: Optional[aptrepo.RepoInfo] = None
    seconds: float = 0.0
    steps: Dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> List[CellResult]:
        """Unexpected failures: these make the run exit 1 (expected ones are reported as xfail)."""
        return [r for r in self.results if r.status is CellStatus.FAILED and not r.expected]

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results], "seconds": self.seconds, "steps": self.steps,
                "repo": None if not self.repo else {"root": str(self.repo.root), "codename": self.repo.codename,
                                                     "signed": self.repo.signed, "packages": self.repo.packages}}


def DistLock(dist: Path, wait: bool = True) -> FileLock:
    """dist/.lock: two builders on one dist/ take turns instead of interleaving files."""
    return FileLock(Path(dist) / ".lock", wait=wait, what=str(dist))


# ---------------------------------------------------------------- progress


class Progress:
    """A redrawn status line on a TTY (bar, ETA, each running cell's step and time); plain lines otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, tty: Optional[bool] = None, jobs: int = 1):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.jobs = max(1, jobs)
        self.done = 0
        self.current: Dict[str, Tuple[str, float]] = {}
        self.estimates: Dict[str, float] = {}  # cell -> seconds it took last time
        self.durations: List[float] = []  # cells built in this run
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        if self.tty:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def expect(self, cell_id: str, seconds: float) -> None:
        if seconds > 0:
            self.estimates[cell_id] = seconds

    def step(self, cell_id: str, step: str) -> None:
        with self.lock:
            t0 = self.current.get(cell_id, (step, time.monotonic()))[1]
            self.current[cell_id] = (step, t0)
            if not self.tty:
                print(f"gpuforge: [{self.done + 1}/{self.total}] {cell_id}: {step}", file=self.stream, flush=True)
            else:
                self._draw()

    def finish(self, result: CellResult) -> None:
        with self.lock:
            self.current.pop(result.cell_id, None)
            self.done += 1
            if result.status is CellStatus.BUILT:
                self.durations.append(result.seconds)
            what = "failed (cached failure)" if result.cached else result.status.value
            line = f"[{self.done}/{self.total}] {result.cell_id}: {what} in {fmt_seconds(result.seconds)}"
            if result.error:
                line += f" ({result.step}: {result.error})" + (" [expected]" if result.expected else "")
            if self.tty:
                self.stream.write("\r\033[K")
            print(("gpuforge: " if not self.tty else "") + line, file=self.stream, flush=True)
            if self.tty:
                self._draw()

    def eta(self) -> Optional[float]:
        """Seconds left: each unfinished cell at its last time (or this run's mean), spread over the jobs."""
        known = self.durations or list(self.estimates.values())
        if not known:
            return None
        mean = sum(known) / len(known)
        now = time.monotonic()
        running = sum(max(0.0, self.estimates.get(c, mean) - (now - t0)) for c, (_, t0) in self.current.items())
        waiting = max(0, self.total - self.done - len(self.current)) * mean
        return (running + waiting) / self.jobs

    def _draw(self) -> None:
        if not self.current:
            return
        width = 30
        bar = "#" * int(width * self.done / max(1, self.total))
        eta = self.eta()
        head = f"[{bar:<{width}}] {self.done}/{self.total}" + (f" ETA ~{fmt_seconds(eta)}" if eta is not None else "")
        parts = [f"{cid} {st} {eta_text(time.monotonic() - t0, self.estimates.get(cid))}"
                 for cid, (st, t0) in self.current.items()]
        self.stream.write(f"\r\033[K{head} " + " | ".join(parts)[:150])
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                self._draw()

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def summary_table(results: Sequence[CellResult]) -> str:
    """Cell, result, time, and the first compiler error line (or the package) per cell; then totals."""
    rows = [("CELL", "RESULT", "TIME", "DETAIL")]
    for r in results:
        failed = r.status is CellStatus.FAILED
        detail = (f"{r.step}: {r.error}" + (" (cached failure)" if r.cached else "")) if failed else r.deb
        if failed and r.expected:
            status, detail = "xfail", f"{detail} [expected: {r.expected}]"
        else:
            status = "FAILED" if failed else r.status.value
        rows.append((r.cell_id, status, fmt_seconds(r.seconds), detail))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}".rstrip() for a, b, c, d in rows]
    built = sum(1 for r in results if r.status is CellStatus.BUILT)
    cached = sum(1 for r in results if r.status is CellStatus.CACHED)
    xfail = sum(1 for r in results if r.status is CellStatus.FAILED and r.expected)
    failed_n = sum(1 for r in results if r.status is CellStatus.FAILED and not r.expected)
    lines.append(f"{built} built, {cached} cached, {failed_n} failed" + (f", {xfail} failed as expected" if xfail else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- the run's state


@dataclass
class Pending:
    cell: Cell
    manifest: dict
    key: str
    changed: Tuple[str, ...]


@dataclass
class DriverRun:
    """Everything one `build drivers` run holds: intent (cells, settings) and state (images, results)."""

    cells: Sequence[Cell]
    settings: Settings
    dist: Path
    jobs: int
    rebuild: bool
    retry_failed: bool
    progress: Progress
    peers: Sequence[Path] = ()  # other stores (shards of one farm) whose entries this run may reuse
    client: Any = None
    build: kmod.BuildSettings = None  # type: ignore[assignment]
    signer: Optional[str] = None  # gpg fingerprint the repo is signed with
    cert_sha: Optional[str] = None
    base: Dict[str, ImageRef] = field(default_factory=dict)  # build suite -> base image
    headers: Dict[str, ImageRef] = field(default_factory=dict)  # kernel ABI -> headers image
    errors: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # suite or ABI -> (step, first error line)
    pending: List[Pending] = field(default_factory=list)
    results: Dict[str, CellResult] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return Store(self.dist)

    def finish(self, r: CellResult) -> None:
        self.results[r.cell_id] = r
        self.progress.finish(r)


# ---------------------------------------------------------------- the runbook


def build_drivers(cells: Sequence[Cell], settings: Settings, dist: Path, jobs: int = 1, rebuild: bool = False,
                  progress: Optional[Progress] = None, client=None, retry_failed: bool = False,
                  publish: bool = True, peers: Sequence[Path] = ()) -> BuildReport:
    """Build (or take from cache) every cell, isolate failures, then publish the apt repo (signed when asked)."""
    t0 = time.monotonic()
    dist = Path(dist).resolve()
    dist.mkdir(parents=True, exist_ok=True)
    run = DriverRun(cells, settings, dist, max(1, jobs), rebuild, retry_failed, progress or Progress(len(cells), jobs=jobs),
                    peers=tuple(Path(p).resolve() for p in peers), client=client)
    repo = None
    with DistLock(dist):
        with step("check signing (modules and repo)", run.timings):
            check_signing(run)
        with step("sweep leftovers of interrupted runs", run.timings):
            sweep(run)
        with step("base images", run.timings):
            prepare_base_images(run)
        with step("cache check", run.timings):
            partition(run)
        if run.pending:
            with step("headers images", run.timings):
                prepare_headers_images(run)
            with step(f"build {len(run.pending)} cell(s), {run.jobs} at a time", run.timings, ticker=False):
                build_pending(run)
        run.progress.close()
        if publish:
            with step("publish apt repo", run.timings):
                repo = publish_repo(run)
        with step("write manifest", run.timings):
            write_manifest(dist)
    ordered = [run.results[c.id] for c in cells if c.id in run.results]
    return BuildReport(ordered, repo, round(time.monotonic() - t0, 1), run.timings)


def check_signing(run: DriverRun) -> None:
    """Module-signing files and the repo's gpg key exist before anything is built (unknown key: exit 2)."""
    s = run.settings
    if bool(s.sign_key) != bool(s.sign_cert):
        raise UserError("module signing needs both sign_key and sign_cert")
    for p in (s.sign_key, s.sign_cert):
        if p and not Path(p).is_file():
            raise UserError(f"signing file not found: {p}")
    run.build = kmod.BuildSettings(s.mirror, s.security_mirror, s.make_jobs, s.sign_key, s.sign_cert)
    run.cert_sha = kmod.signing_cert_sha(s.sign_cert)
    run.signer = aptrepo.gpg_fingerprint(s.gpg_key, s.gpg_home) if s.gpg_key else None


def sweep(run: DriverRun) -> None:
    """Leftovers of an interrupted run (temp build dirs, half-published debs, index temp dirs, cell containers)
    are never trusted: remove them (we hold the lock, so none is in use)."""
    for p in run.dist.glob(".build-*"):
        shutil.rmtree(p, ignore_errors=True)
    pool = run.dist / "apt" / "pool"
    for p in pool.rglob(".*.tmp") if pool.exists() else ():
        p.unlink(missing_ok=True)
    aptrepo.sweep_stale(run.dist / "apt")
    run.client = run.client or docker_client()
    try:
        for c in run.client.containers.list(all=True, filters={"label": f"gpuforge.dist={run.dist}"}):
            log.warning("removing leftover build container %s (%s)", c.short_id, c.labels.get("gpuforge.cell"))
            c.remove(force=True)
    except Exception as e:  # cleanup is best effort; the build itself does not depend on it
        log.warning("could not list leftover containers: %s", e)


def prepare_base_images(run: DriverRun) -> None:
    """One base image per build suite; a suite whose image cannot be made fails its cells, the others go on."""
    for suite in dict.fromkeys(c.kernel.build_suite for c in run.cells):
        spec = kmod.base_spec(next(c for c in run.cells if c.kernel.build_suite == suite), run.build)
        try:
            run.base[suite] = ensure_base_image(spec, run.client)
        except Exception as e:
            run.errors[suite] = ("buildenv", str(e).splitlines()[0] if str(e) else type(e).__name__)


def _reuse_from_peer(run: DriverRun, cell: Cell, key: str) -> Optional[CacheEntry]:
    """A shard of the same farm built this cell with this key: link its .deb into our pool and record it
    (a failure with this key is remembered as ours too)."""
    for peer in run.peers:
        if peer == run.dist:
            continue
        hit = Store(peer).hit(cell.id, key)
        if hit is not None and hit.failed:
            run.store.write(hit)
            return hit
        if hit is None or hit.artifact is None:
            continue
        src, dest = peer / hit.artifact.path, run.dist / hit.artifact.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        tmp.replace(dest)
        entry = CacheEntry(cell.id, key, hit.inputs, CacheStatus.BUILT, (Artifact.record(run.dist, hit.artifact.path),),
                           seconds=hit.seconds, steps=hit.steps).stamped()
        run.store.write(entry)
        return entry
    return None


def partition(run: DriverRun) -> None:
    """Split cells into cached (done now) and pending (with what changed since their last build)."""
    store = run.store
    for cell in run.cells:
        suite = cell.kernel.build_suite
        if suite in run.errors:
            step_name, err = run.errors[suite]
            run.finish(CellResult(cell.id, CellStatus.FAILED, 0.0, error=err, step=step_name, expected=cell.expect_fail))
            continue
        manifest = kmod.cache_manifest(cell, run.base[suite].id, run.build, run.cert_sha)
        key = kmod.cache_key(manifest)
        hit = None if run.rebuild else (store.hit(cell.id, key) or _reuse_from_peer(run, cell, key))
        if hit is not None and hit.failed and run.retry_failed:
            hit = None
        if hit is not None and hit.failed:
            run.finish(CellResult(cell.id, CellStatus.FAILED, 0.0, package=manifest["package"], error=hit.error,
                                  step=hit.step, log=hit.log, cached=True, expected=cell.expect_fail))
        elif hit is not None and hit.artifact is not None:
            run.finish(CellResult(cell.id, CellStatus.CACHED, 0.0, package=manifest["package"], deb=hit.artifact.path))
        else:
            old = store.read(cell.id)
            if old is not None:
                run.progress.expect(cell.id, old.seconds)
            run.pending.append(Pending(cell, manifest, key, kmod.changed_inputs(old.inputs if old else None, manifest)))


def prepare_headers_images(run: DriverRun) -> None:
    """One headers image per kernel ABI that has pending cells (found by tag when an earlier run made it)."""
    for p in run.pending:
        abi = p.cell.kernel.abi
        if abi in run.headers or abi in run.errors:
            continue
        try:
            run.headers[abi] = kmod.build_headers_image(p.cell, run.base[p.cell.kernel.build_suite], run.build, run.client)
        except kmod.StepFailed as e:
            run.errors[abi] = (e.step, e.first_error)
            bad = kmod.archive_mismatch(p.cell, e.output)
            if bad:
                run.errors[abi] = (e.step, e.first_error + "\n" + bad)
        except Exception as e:
            run.errors[abi] = ("headers", f"{type(e).__name__}: {e}".splitlines()[0][:300])


def build_pending(run: DriverRun) -> None:
    """The pending cells, `jobs` at a time; Ctrl-C/SIGTERM removes the running containers and re-raises."""
    aborting = threading.Event()  # set on Ctrl-C/SIGTERM: failures seen from then on are not the cell's own

    def work(p: Pending) -> CellResult:
        if p.cell.kernel.abi in run.errors:
            step_name, err = run.errors[p.cell.kernel.abi]
            first, _, bad = err.partition("\n")
            r = CellResult(p.cell.id, CellStatus.FAILED, 0.0, package=p.manifest["package"], error=first, step=step_name,
                           bad_input=bad)
        else:
            ctx = kmod.CellContext(run.client, run.dist, run.build, run.headers[p.cell.kernel.abi], run.progress.step)
            r = kmod.build_cell(p.cell, ctx, p.manifest, p.key)
        r.changed = p.changed
        r.expected = p.cell.expect_fail if r.status is CellStatus.FAILED else ""
        if r.status is CellStatus.BUILT:
            run.store.write(CacheEntry(p.cell.id, p.key, p.manifest, CacheStatus.BUILT, (Artifact.record(run.dist, r.deb),),
                                       log=r.log, seconds=r.seconds, steps=tuple(r.steps.items())).stamped())
        elif r.step in DETERMINISTIC_STEPS and not aborting.is_set():
            # A compile/verify failure repeats with the same inputs: remember it so a no-op run stays instant.
            run.store.write(CacheEntry(p.cell.id, p.key, p.manifest, CacheStatus.FAILED, step=r.step, error=r.error,
                                       log=r.log, seconds=r.seconds, steps=tuple(r.steps.items())).stamped())
        run.finish(r)
        return r

    pool = cf.ThreadPoolExecutor(max_workers=run.jobs)
    try:
        for _ in pool.map(work, run.pending):
            pass
    except KeyboardInterrupt:
        # Removing the cell containers ends their running steps, so the workers return at once.
        aborting.set()
        pool.shutdown(wait=False, cancel_futures=True)
        sweep_containers(run)
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)
        run.progress.close()


def sweep_containers(run: DriverRun) -> None:
    try:
        for c in run.client.containers.list(all=True, filters={"label": f"gpuforge.dist={run.dist}"}):
            c.remove(force=True)
    except Exception as e:
        log.warning("could not remove build containers: %s", e)


def publish_repo(run: DriverRun) -> aptrepo.RepoInfo:
    """Regenerate the index when the pool or the signer differ from what dists/ was made from (every run checks)."""
    s, root = run.settings, run.dist / "apt"
    return publish_pool(root, s.repo_codename, s.gpg_key, s.gpg_home, run.signer, force=run.rebuild)


def publish_pool(root: Path, codename: str, gpg_key: Optional[str], gpg_home: Optional[str], signer: Optional[str],
                 force: bool = False) -> aptrepo.RepoInfo:
    """The apt index over root/pool, signed by signer's key when given (the keyring exported next to it)."""
    ring = root / "gpuforge-archive-keyring.gpg"
    if not force and aptrepo.is_current(root, codename, signer) and (signer is None or ring.is_file()):
        packages = (root / "dists" / codename / aptrepo.COMPONENT / f"binary-{aptrepo.ARCH}" / "Packages")
        count = sum(1 for ln in packages.read_text().splitlines() if ln.startswith("Package: "))
        return aptrepo.RepoInfo(root, codename, signer is not None, count)
    repo = aptrepo.publish_repo(root, codename, gpg_key if signer else None, gpg_home, signer)
    if signer and gpg_key:
        aptrepo.export_public_key(gpg_key, gpg_home, ring)
    elif ring.exists():
        ring.unlink()  # an unsigned repo must not look signed
    return repo


def write_manifest(dist: Path) -> None:
    """dist/apt/manifest.json: every cell's cache entry (inputs, deb, sha256) in one file."""
    entries = {}
    for e in Store(dist).entries():
        a = e.artifact
        entries[e.name] = {"key": e.key, "manifest": dict(e.inputs), "status": e.status.value, "built_at": e.built_at,
                           **({"deb": a.path, "sha256": a.sha256} if a else {}),
                           **({"step": e.step, "error": e.error} if e.failed else {})}
    atomic.write_text(dist / "apt" / "manifest.json", json.dumps({"kmods": entries}, indent=2, sort_keys=True) + "\n")


def cache_hit(dist: Path, cell: Cell, key: str) -> Optional[CacheEntry]:
    """The cell's cache entry when its key matches and its .deb is intact (failures match on the key alone)."""
    return Store(Path(dist)).hit(cell.id, key)
