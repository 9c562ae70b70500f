"""`gpuforge build drivers`: build the selected cells (cached, isolated, in parallel), then publish dist/apt.

dist/ layout:
  apt/pool/main/n/<pkg>/<pkg>_<ver>_amd64.deb    the packages (kept across driver versions: rollback needs them)
  apt/dists/<codename>/...                       Packages, Release, InRelease (when a gpg key is set)
  apt/manifest.json                              per cell: cache key, inputs, deb, sha256
  cache/<cell>.json                              the cache entry a later run trusts (written after the deb)
  logs/<cell>.log                                each step's output; compile.log in full on failure
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from builder.digest import sha256_file
from builder import aptrepo, kmod
from builder.buildenv import ensure_base_image, docker_client
from builder.config import Settings
from builder.matrix import Cell
from validator import atomic
from validator.errors import UserError

log = logging.getLogger("gpuforge.drivers")

# Failures of these steps depend only on the cache-key inputs (not on the network), so they are cached too.
DETERMINISTIC_STEPS = ("extract", "compile", "strip", "verify")


@dataclass
class BuildReport:
    results: List[kmod.CellResult]
    repo: Optional[aptrepo.RepoInfo] = None
    seconds: float = 0.0

    @property
    def failed(self) -> List[kmod.CellResult]:
        """Unexpected failures: these make the run exit 1 (expected ones are reported as xfail)."""
        return [r for r in self.results if r.status == "failed" and not r.expected]

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results], "seconds": self.seconds,
                "repo": None if not self.repo else {"root": str(self.repo.root), "codename": self.repo.codename,
                                                     "signed": self.repo.signed, "packages": self.repo.packages}}


# ---------------------------------------------------------------- lock


class DistLock:
    """An flock on dist/.lock: two builders on one dist/ take turns instead of interleaving files."""

    def __init__(self, dist: Path, wait: bool = True):
        self.path = dist / ".lock"
        self.wait = wait
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            if not self.wait:
                os.close(self.fd)
                raise UserError(f"{self.path.parent} is locked by another build (pid {holder})") from None
            log.warning("waiting for %s (held by pid %s)", self.path, holder)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# ---------------------------------------------------------------- progress


class Progress:
    """A redrawn status line on a TTY (cell, step, elapsed); plain log lines otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, tty: Optional[bool] = None):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.done = 0
        self.current: Dict[str, Tuple[str, float]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        if self.tty:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def step(self, cell_id: str, step: str) -> None:
        with self.lock:
            self.current[cell_id] = (step, time.monotonic())
            if not self.tty:
                print(f"gpuforge: [{self.done + 1}/{self.total}] {cell_id}: {step}", file=self.stream, flush=True)
            else:
                self._draw()

    def finish(self, result: kmod.CellResult) -> None:
        with self.lock:
            self.current.pop(result.cell_id, None)
            self.done += 1
            what = "failed (cached failure)" if result.cached else result.status
            line = f"[{self.done}/{self.total}] {result.cell_id}: {what} in {fmt_seconds(result.seconds)}"
            if result.error:
                line += f" ({result.step}: {result.error})" + (" [expected]" if result.expected else "")
            if self.tty:
                self.stream.write("\r\033[K")
            print(("gpuforge: " if not self.tty else "") + line, file=self.stream, flush=True)
            if self.tty:
                self._draw()

    def _draw(self) -> None:
        if not self.current:
            return
        width = 30
        bar = "#" * int(width * self.done / max(1, self.total))
        parts = [f"{cid} {st} {fmt_seconds(time.monotonic() - t0)}" for cid, (st, t0) in self.current.items()]
        self.stream.write(f"\r\033[K[{bar:<{width}}] {self.done}/{self.total} " + " | ".join(parts)[:160])
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


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def summary_table(results: Sequence[kmod.CellResult]) -> str:
    """Cell, result, time, and the first compiler error line (or the package) per cell; then totals."""
    rows = [("CELL", "RESULT", "TIME", "DETAIL")]
    for r in results:
        detail = (f"{r.step}: {r.error}" + (" (cached failure)" if r.cached else "")) if r.status == "failed" else r.deb
        if r.status == "failed" and r.expected:
            status, detail = "xfail", f"{detail} [expected: {r.expected}]"
        else:
            status = r.status.upper() if r.status == "failed" else r.status
        rows.append((r.cell_id, status, fmt_seconds(r.seconds), detail))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}".rstrip() for a, b, c, d in rows]
    counts = {s: sum(1 for r in results if r.status == s) for s in ("built", "cached")}
    xfail = sum(1 for r in results if r.status == "failed" and r.expected)
    failed = sum(1 for r in results if r.status == "failed" and not r.expected)
    lines.append(f"{counts['built']} built, {counts['cached']} cached, {failed} failed"
                 + (f", {xfail} failed as expected" if xfail else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- the run


def _cache_file(dist: Path, cell: Cell) -> Path:
    return dist / "cache" / f"{kmod.safe_name(cell.id)}.json"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cache_hit(dist: Path, cell: Cell, key: str) -> Optional[dict]:
    """The cache entry when its key matches and its .deb is there with the recorded size and sha256."""
    entry = _read_json(_cache_file(dist, cell))
    if not entry or entry.get("key") != key:
        return None
    if entry.get("status") == "failed":
        return entry  # same inputs, same compiler: the failure is known (--retry-failed builds it again)
    deb = dist / entry.get("deb", "")
    try:
        st = deb.stat()
    except OSError:
        return None
    if st.st_size != entry.get("size"):
        return None
    # Same size and mtime as when we recorded it: trust the recorded sha256 (keeps a no-op run instant).
    if st.st_mtime_ns != entry.get("mtime_ns") and sha256_file(deb) != entry.get("sha256"):
        return None
    return entry


def _sweep_containers(client, dist: Path) -> None:
    """Cell containers a killed run on this dist/ left behind (we hold its lock, so none is in use)."""
    try:
        for c in client.containers.list(all=True, filters={"label": f"gpuforge.dist={dist}"}):
            log.warning("removing leftover build container %s (%s)", c.short_id, c.labels.get("gpuforge.cell"))
            c.remove(force=True)
    except Exception as e:  # cleanup is best effort; the build itself does not depend on it
        log.warning("could not list leftover containers: %s", e)


def _sweep(dist: Path) -> None:
    """Leftovers of an interrupted run (temp build dirs, half-published debs) are never trusted: remove them."""
    for p in dist.glob(".build-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in (dist / "apt" / "pool").rglob(".*.tmp") if (dist / "apt" / "pool").exists() else ():
        p.unlink(missing_ok=True)


def build_drivers(cells: Sequence[Cell], settings: Settings, dist: Path, jobs: int = 1, rebuild: bool = False,
                  progress: Optional[Progress] = None, client=None, retry_failed: bool = False) -> BuildReport:
    """Build (or take from cache) every cell, isolate failures, then regenerate the apt repo."""
    t0 = time.monotonic()
    dist = Path(dist).resolve()
    dist.mkdir(parents=True, exist_ok=True)
    bs = kmod.BuildSettings(settings.mirror, settings.security_mirror, settings.make_jobs, settings.sign_key,
                            settings.sign_cert)
    if bool(bs.sign_key) != bool(bs.sign_cert):
        raise UserError("module signing needs both sign_key and sign_cert")
    for p in (bs.sign_key, bs.sign_cert):
        if p and not Path(p).is_file():
            raise UserError(f"signing file not found: {p}")
    cert_sha = kmod._file_sha(bs.sign_cert)
    progress = progress or Progress(len(cells))
    results: Dict[str, kmod.CellResult] = {}
    with DistLock(dist):
        _sweep(dist)
        client = client or docker_client()
        _sweep_containers(client, dist)
        images, image_errors = {}, {}
        for suite in dict.fromkeys(c.kernel.build_suite for c in cells):
            spec = kmod.base_spec(next(c for c in cells if c.kernel.build_suite == suite), bs)
            try:
                images[suite] = ensure_base_image(spec, client)
            except Exception as e:  # the cells of this suite fail; others go on
                image_errors[suite] = str(e).splitlines()[0]
        todo = []
        for cell in cells:
            if cell.kernel.build_suite in image_errors:
                r = kmod.CellResult(cell.id, "failed", 0.0, error=image_errors[cell.kernel.build_suite], step="buildenv")
                results[cell.id] = r
                progress.finish(r)
                continue
            image = images[cell.kernel.build_suite]
            manifest = kmod.cache_manifest(cell, image.id, bs, cert_sha)
            key = kmod.cache_key(manifest)
            hit = None if rebuild else cache_hit(dist, cell, key)
            if hit and hit.get("status") == "failed" and retry_failed:
                hit = None
            if hit and hit.get("status") == "failed":
                r = kmod.CellResult(cell.id, "failed", 0.0, package=manifest["package"], error=hit["error"],
                                    step=hit["step"], log=hit.get("log", ""), cached=True, expected=cell.expect_fail)
                results[cell.id] = r
                progress.finish(r)
                continue
            if hit:
                r = kmod.CellResult(cell.id, "cached", 0.0, package=manifest["package"], deb=hit["deb"])
                results[cell.id] = r
                progress.finish(r)
                continue
            old = _read_json(_cache_file(dist, cell))
            todo.append((cell, image, manifest, key, kmod.changed_inputs(old.get("manifest") if old else None, manifest)))

        aborting = threading.Event()  # set on Ctrl-C/SIGTERM: failures seen from then on are not the cell's own

        def work(item):
            cell, image, manifest, key, changed = item
            ctx = kmod.CellContext(client, dist, bs, image, progress.step)
            r = kmod.build_cell(cell, ctx, manifest, key)
            r.changed = changed
            r.expected = cell.expect_fail if r.status == "failed" else ""
            if r.status == "built":
                deb = dist / r.deb
                st = deb.stat()
                entry = {"cell": cell.id, "key": key, "manifest": manifest, "deb": r.deb, "size": st.st_size,
                         "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(deb), "seconds": r.seconds,
                         "steps": r.steps, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                atomic.write_text(_cache_file(dist, cell), json.dumps(entry, indent=2, sort_keys=True) + "\n")
            elif r.step in DETERMINISTIC_STEPS and not aborting.is_set():
                # A compile/verify failure repeats with the same inputs: remember it so a no-op run stays instant.
                entry = {"cell": cell.id, "key": key, "manifest": manifest, "status": "failed", "step": r.step,
                         "error": r.error, "log": r.log, "seconds": r.seconds,
                         "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                atomic.write_text(_cache_file(dist, cell), json.dumps(entry, indent=2, sort_keys=True) + "\n")
            progress.finish(r)
            return r

        pool = cf.ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            for r in pool.map(work, todo):
                results[r.cell_id] = r
        except KeyboardInterrupt:
            # Removing the cell containers ends their running steps, so the workers return at once.
            aborting.set()
            pool.shutdown(wait=False, cancel_futures=True)
            _sweep_containers(client, dist)
            pool.shutdown(wait=True)
            raise
        finally:
            pool.shutdown(wait=True)
            progress.close()
        repo = None
        index = dist / "apt" / "dists" / settings.repo_codename / "Release"
        if any(r.status == "built" for r in results.values()) or not index.exists() or rebuild:
            repo = aptrepo.publish_repo(dist / "apt", settings.repo_codename, settings.gpg_key, settings.gpg_home)
            if settings.gpg_key:
                aptrepo.export_public_key(settings.gpg_key, settings.gpg_home, dist / "apt" / "gpuforge-archive-keyring.gpg")
        else:
            repo = aptrepo.RepoInfo(dist / "apt", settings.repo_codename, (index.parent / "InRelease").exists(), -1)
        _write_manifest(dist)
    ordered = [results[c.id] for c in cells if c.id in results]
    for c, r in zip([c for c in cells if c.id in results], ordered):
        if r.status == "failed" and c.expect_fail:
            r.expected = c.expect_fail
    return BuildReport(ordered, repo, round(time.monotonic() - t0, 1))


def _write_manifest(dist: Path) -> None:
    """dist/apt/manifest.json: every cell's cache entry (inputs, deb, sha256) in one file."""
    entries = {}
    for f in sorted((dist / "cache").glob("*.json")) if (dist / "cache").exists() else ():
        e = _read_json(f)
        if e:
            entries[e["cell"]] = {k: e[k] for k in ("key", "manifest", "status", "deb", "sha256", "step", "error", "built_at")
                                  if k in e}
    atomic.write_text(dist / "apt" / "manifest.json", json.dumps({"kmods": entries}, indent=2, sort_keys=True) + "\n")
