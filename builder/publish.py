"""Scale-out over a shared store: each shard of a farm builds into DIST/shards/<i>-of-<N>/ and records what it
claimed; `gpuforge publish` merges every shard's packages into DIST/apt with one (signed) Release.

Refused, with nothing published: a missing or unfinished shard, shards of different counts or plans, a cell
claimed by two shards, two different builds of one package file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from builder import aptrepo
from builder.cache import Artifact, CacheEntry, Store
from builder.config import Settings
from builder.shard import Shard
from validator import atomic, userfile
from validator.errors import UserError
from validator.schema import Reader

SHARDS_DIR = "shards"
RECORD = "shard.json"


def shard_dir(dist: Path, shard: Shard) -> Path:
    return Path(dist) / SHARDS_DIR / shard.name


def peer_dirs(dist: Path) -> List[Path]:
    """Every shard folder in the store (their caches are shared: a cell built by any shard is not built again)."""
    root = Path(dist) / SHARDS_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def check_writable(dist: Path) -> None:
    """The shared store must take our files before we spend an hour compiling into it."""
    try:
        Path(dist).mkdir(parents=True, exist_ok=True)
        probe = Path(dist) / f".write-test.{socket.gethostname()}.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"the shared store {dist} is not writable: {e.strerror or e}",
                        hint="--dist must be a folder every worker can write (NFS, CephFS, ...)") from None


@dataclass(frozen=True)
class ShardRecord:
    """What one shard claimed and how it ended (DIST/shards/<i>-of-<N>/shard.json, written last)."""

    index: int
    count: int
    plan: str  # sha256 of the selected cells of the whole matrix: every shard must come from the same plan
    cells: Tuple[str, ...]
    failed: Tuple[str, ...]  # unexpected failures
    host: str
    finished_at: str

    def to_dict(self) -> dict:
        return dict(self.__dict__, cells=list(self.cells), failed=list(self.failed))

    @classmethod
    def read(cls, path: Path) -> "ShardRecord":
        """The record in path; unreadable, not JSON or a field of the wrong type is a ConfigError naming file and key."""
        r = Reader(str(path), userfile.load_json(path, "shard record", top=dict))
        count = r.key("count").int(lo=1)
        return cls(r.key("index").int(lo=1, hi=count), count, r.key("plan").str(),
                   tuple(x.str() for x in r.key("cells").list()), tuple(x.str() for x in r.key("failed").list()),
                   r.key("host", "").str(nonempty=False), r.key("finished_at", "").str(nonempty=False))


def write_record(dist: Path, shard: Shard, plan: str, cells: Sequence[str], failed: Sequence[str]) -> Path:
    path = shard_dir(dist, shard) / RECORD
    rec = ShardRecord(shard.index, shard.count, plan, tuple(cells), tuple(failed), socket.gethostname(),
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic.write_text(path, json.dumps(rec.to_dict(), indent=2) + "\n")
    return path


def clear_record(dist: Path, shard: Shard) -> None:
    """A shard starting again is unfinished until it writes its record anew."""
    (shard_dir(dist, shard) / RECORD).unlink(missing_ok=True)


@dataclass(frozen=True)
class MergeItem:
    cell: str
    shard: str
    entry: CacheEntry
    store: Path


@dataclass
class PublishReport:
    shards: int
    packages: List[str]
    failed: List[str]
    repo: Optional[aptrepo.RepoInfo]


def collect(dist: Path, count: Optional[int] = None) -> Tuple[List[ShardRecord], List[MergeItem]]:
    """Read and cross-check every shard record, then the built packages they claim (pure reading, no writes)."""
    root = Path(dist) / SHARDS_DIR
    records: Dict[str, ShardRecord] = {}
    for d in peer_dirs(dist):
        if os.path.lexists(d / RECORD):  # a folder or FIFO there is an error, not an unfinished shard
            records[d.name] = ShardRecord.read(d / RECORD)
    counts = sorted({r.count for r in records.values()} | ({count} if count else set()))
    if not records:
        raise UserError(f"no finished shard in {root}", hint="run `gpuforge build drivers --shard i/N --dist DIST` first")
    if len(counts) != 1:
        raise UserError(f"shards of different counts in {root}: {', '.join(map(str, counts))}",
                        hint="remove the folders of the old layout, or pass --shards N for the one to publish")
    n = counts[0]
    missing = [i for i in range(1, n + 1) if f"{i}-of-{n}" not in records]
    if missing:
        raise UserError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} not finished: no {root}/<i>-of-{n}/{RECORD}",
                        hint="wait for them (or run them again); nothing was published")
    mine = [records[f"{i}-of-{n}"] for i in range(1, n + 1)]
    plans = {r.plan for r in mine}
    if len(plans) != 1:
        raise UserError(f"the shards in {root} come from different plans (matrix or selection changed between them)")
    owner: Dict[str, str] = {}
    for r in mine:
        for c in r.cells:
            if c in owner:
                raise UserError(f"cell {c} is claimed by shard {owner[c]} and shard {r.index}/{r.count}")
            owner[c] = f"{r.index}/{r.count}"
    items: List[MergeItem] = []
    by_file: Dict[str, MergeItem] = {}
    for r in mine:
        store = root / f"{r.index}-of-{r.count}"
        for c in r.cells:
            e = Store(store).load(c)  # a corrupt entry stops the merge: the shard's build is in doubt
            if e is None:
                continue
            item = MergeItem(c, f"{r.index}/{r.count}", e, store)
            a = e.artifact
            if e.failed or a is None:  # a failure is remembered in DIST too: a later plain run does not recompile it
                if e.failed:
                    items.append(item)
                continue
            if not e.intact(store):
                raise UserError(f"{store / a.path}: changed or missing since shard {r.index}/{r.count} built it")
            other = by_file.get(a.path)
            if other is not None and other.entry.artifact and other.entry.artifact.sha256 != a.sha256:
                raise UserError(f"two different builds of {a.path}: cell {other.cell} (shard {other.shard}, "
                                f"sha256 {other.entry.artifact.sha256[:12]}) and cell {c} (shard {item.shard}, "
                                f"sha256 {a.sha256[:12]})")
            by_file[a.path] = item
            items.append(item)
    return mine, items


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dest)


def publish_shards(dist: Path, settings: Settings, count: Optional[int] = None) -> PublishReport:
    """Merge every shard's packages into DIST/apt and publish one index (signed when a gpg key is set)."""
    from builder.drivers import DistLock, publish_pool, write_manifest

    dist = Path(dist).resolve()
    signer = aptrepo.gpg_fingerprint(settings.gpg_key, settings.gpg_home) if settings.gpg_key else None
    with DistLock(dist):
        records, items = collect(dist, count)  # every check before the first write
        store = Store(dist)
        for it in items:
            if it.entry.artifact is None:
                store.write(it.entry)
                continue
            _link(it.store / it.entry.artifact.path, dist / it.entry.artifact.path)
            # recorded anew in DIST (its own mtime): the next unsharded run on DIST trusts it without re-hashing
            store.write(replace(it.entry, artifacts=(Artifact.record(dist, it.entry.artifact.path),)))
            if it.entry.log and (it.store / it.entry.log).is_file():
                _link(it.store / it.entry.log, dist / it.entry.log)
        repo = publish_pool(dist / "apt", settings.repo_codename, settings.gpg_key, settings.gpg_home, signer)
        write_manifest(dist)
    failed = [c for r in records for c in r.failed]
    return PublishReport(len(records), sorted(it.entry.artifact.path for it in items if it.entry.artifact), failed, repo)
