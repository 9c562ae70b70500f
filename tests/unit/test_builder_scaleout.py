"""Scale-out: shard assignment, the scheduler environment, the shard merge's refusals, rendered Slurm/K8s jobs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder import publish, scaleout
from builder.cache import Artifact, CacheEntry, CacheStatus, Store
from builder.cli import main
from builder.config import Settings, repo_root
from builder.plan import load_plan
from builder.shard import Shard, parse_shard, resolve_shard, shard_from_env
from validator.errors import UserError

ROOT = repo_root()


def test_shards_partition_the_plan_exactly():
    _, plan = load_plan(ROOT / "matrix-full.yaml")
    for n in (1, 2, 3, 7, len(plan.cells) + 2):
        parts = [plan.select(None, (i, n)) for i in range(1, n + 1)]
        ids = [c.id for p in parts for c in p]
        assert sorted(ids) == sorted(c.id for c in plan.cells) and len(ids) == len(set(ids))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


@pytest.mark.parametrize("env,want", [
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"}, (1, 2)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"}, (1, 3)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, (4, 4)),
    ({"JOB_COMPLETION_INDEX": "0", "GPUFORGE_SHARDS": "2"}, (1, 2)),
    ({"JOB_COMPLETION_INDEX": "1", "GPUFORGE_SHARDS": "2"}, (2, 2)),
    ({}, None),
])
def test_shard_from_scheduler_environment(env, want):
    got = shard_from_env(env)
    assert (got.as_tuple() if got else None) == want


@pytest.mark.parametrize("env,msg", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"}, "array has 2 task"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, "not a task of the array"),
    ({"JOB_COMPLETION_INDEX": "2", "GPUFORGE_SHARDS": "2"}, "outside 0..1"),
    ({"JOB_COMPLETION_INDEX": "0"}, "GPUFORGE_SHARDS"),
])
def test_bad_scheduler_environment_is_a_clear_error(env, msg):
    with pytest.raises(UserError, match=msg):
        shard_from_env(env)


def test_shard_option_wins_and_is_checked():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert resolve_shard("2/2", env).as_tuple() == (2, 2)
    assert resolve_shard(None, env).source == "SLURM_ARRAY_TASK_ID"
    for bad in ("0/2", "3/2", "a/b", "1/0", "1-2"):
        with pytest.raises(UserError, match="not a shard"):
            parse_shard(bad)


def test_cli_shard_out_of_range_is_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["build", "drivers", "--shard", "3/2", "--dist", str(tmp_path)])
    assert r.exit_code == 2 and "not a shard i/N" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["build", "drivers", "--dist", str(tmp_path)],
                           env={"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"})
    assert r.exit_code == 2 and "array has 2 task" in r.output


def test_unwritable_store_is_refused_before_building(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    f = ro / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        publish.check_writable(f / "store")  # a path under a file: never writable, even for root


# ---------------------------------------------------------------- merging shards


def _shard(dist: Path, i: int, n: int, cells: dict, plan: str = "P", failed=()) -> None:
    """A finished shard: a built .deb (bytes given) per cell, its cache entries, its record."""
    sd = publish.shard_dir(dist, Shard(i, n, "test"))
    for cell, data in cells.items():
        rel = f"apt/pool/main/g/{cell}/{cell}_1_amd64.deb"
        (sd / rel).parent.mkdir(parents=True, exist_ok=True)
        (sd / rel).write_bytes(data)
        Store(sd).write(CacheEntry(cell, "K" + cell, {"source": cell}, CacheStatus.BUILT, (Artifact.record(sd, rel),)))
    publish.write_record(dist, Shard(i, n, "test"), plan, list(cells), list(failed))


def test_collect_merges_complete_shards(tmp_path):
    _shard(tmp_path, 1, 2, {"a": b"A"})
    _shard(tmp_path, 2, 2, {"b": b"B", "c": b"C"})
    records, items = publish.collect(tmp_path)
    assert [r.index for r in records] == [1, 2] and sorted(i.cell for i in items) == ["a", "b", "c"]


@pytest.mark.parametrize("make,msg", [
    (lambda d: _shard(d, 1, 2, {"a": b"A"}), r"shard\(s\) 2/2 not finished"),
    (lambda d: (_shard(d, 1, 2, {"a": b"A"}), _shard(d, 2, 2, {"a": b"A"})), "cell a is claimed by shard 1/2 and shard 2/2"),
    (lambda d: (_shard(d, 1, 2, {"a": b"A"}), _shard(d, 2, 2, {"b": b"B"}, plan="Q")), "different plans"),
    (lambda d: (_shard(d, 1, 1, {"a": b"A"}), _shard(d, 1, 2, {"a": b"A"}), _shard(d, 2, 2, {})), "different counts"),
    (lambda d: None, "no finished shard"),
])
def test_collect_refuses(tmp_path, make, msg):
    make(tmp_path)
    with pytest.raises(UserError, match=msg):
        publish.collect(tmp_path)
    assert not (tmp_path / "apt").exists()  # nothing published


def test_two_different_builds_of_one_package_are_refused(tmp_path):
    # Different cells naming the same package file with different bytes (e.g. two matrices disagreeing).
    _shard(tmp_path, 1, 2, {"a": b"A"})
    _shard(tmp_path, 2, 2, {"b": b"B"})
    sd2 = publish.shard_dir(tmp_path, Shard(2, 2, "t"))
    e = Store(sd2).read("b")
    rel = "apt/pool/main/g/a/a_1_amd64.deb"
    (sd2 / rel).parent.mkdir(parents=True)
    (sd2 / rel).write_bytes(b"not A")
    Store(sd2).write(CacheEntry("b", e.key, e.inputs, CacheStatus.BUILT, (Artifact.record(sd2, rel),)))
    with pytest.raises(UserError, match="two different builds of apt/pool/main/g/a/a_1_amd64.deb"):
        publish.collect(tmp_path)


def test_a_shard_artifact_changed_after_the_build_is_refused(tmp_path):
    _shard(tmp_path, 1, 1, {"a": b"A"})
    (publish.shard_dir(tmp_path, Shard(1, 1, "t")) / "apt/pool/main/g/a/a_1_amd64.deb").write_bytes(b"AB")
    with pytest.raises(UserError, match="changed or missing"):
        publish.collect(tmp_path)


@pytest.mark.subprocess
def test_publish_merges_into_one_repo(tmp_path):
    _shard(tmp_path, 1, 2, {"a": b"A"}, failed=["x"])
    _shard(tmp_path, 2, 2, {"b": b"B"})
    sd2 = publish.shard_dir(tmp_path, Shard(2, 2, "t"))
    Store(sd2).write(CacheEntry("o", "Ko", {}, CacheStatus.FAILED, step="compile", error="nv-pci.c: error: x"))
    publish.write_record(tmp_path, Shard(2, 2, "t"), "P", ["b", "o"], [])
    rep = publish.publish_shards(tmp_path, Settings(), None)
    assert rep.shards == 2 and rep.failed == ["x"] and len(rep.packages) == 2
    assert (tmp_path / "apt/pool/main/g/a/a_1_amd64.deb").read_bytes() == b"A"
    assert (tmp_path / "apt/dists/gpuforge/Release").is_file()
    merged = json.loads((tmp_path / "apt/manifest.json").read_text())["kmods"]
    assert set(merged) == {"a", "b", "o"} and merged["o"]["status"] == "failed"
    assert Store(tmp_path).hit("a", "Ka") is not None  # DIST's own cache now knows it (a later plain run hits)
    assert Store(tmp_path).hit("o", "Ko").failed  # and the shard's compile failure, so it is not compiled again


# ---------------------------------------------------------------- rendered jobs


def _job(n=2):
    return scaleout.FarmJob(gpuforge="/opt/gf/bin/gpuforge", config="/srv/m x.yaml", dist="/srv/store", shards=n,
                            extra=("--only", "proprietary"))


def test_sbatch_scripts():
    a = scaleout.sbatch_array(_job())
    assert "#SBATCH --array=1-2" in a and "#SBATCH --output=/srv/store/logs/slurm-%A_%a.out" in a
    cmd = shlex.split(a.splitlines()[-1])
    assert cmd[:4] == ["exec", "/opt/gf/bin/gpuforge", "build", "drivers"] and "/srv/m x.yaml" in cmd
    assert "--shard" not in cmd  # each task reads SLURM_ARRAY_TASK_ID itself
    p = scaleout.sbatch_publish(_job())
    assert shlex.split(p.splitlines()[-1])[1:3] == ["/opt/gf/bin/gpuforge", "publish"]
    assert "--shards" in p and "--array" not in p


def test_k8s_indexed_job():
    docs = [d for d in yaml.safe_load_all(scaleout.k8s_manifests(_job(3), "registry/gf:1", "store-claim"))]
    build, pub = docs
    assert build["spec"]["completionMode"] == "Indexed" and build["spec"]["completions"] == 3
    c = build["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GPUFORGE_SHARDS", "value": "3"} in c["env"] and c["command"][1:3] == ["build", "drivers"]
    assert build["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "store-claim"
    assert pub["spec"]["template"]["spec"]["containers"][0]["command"][1] == "publish"


def test_cli_renders_slurm_and_k8s(tmp_path):
    r = CliRunner().invoke(main, ["slurm", "render", "--dist", str(tmp_path / "store"), "--shards", "2",
                                  "--config", str(ROOT / "matrix.yaml")])
    assert r.exit_code == 0, r.output
    assert "#SBATCH --array=1-2" in (tmp_path / "store/slurm/build-drivers.sbatch").read_text()
    r = CliRunner().invoke(main, ["slurm", "render", "--dist", "relative", "--shards", "2"])
    assert r.exit_code == 2 and "absolute" in r.output
    r = CliRunner().invoke(main, ["k8s", "render", "--dist", "/store", "--shards", "2", "--image", "i", "--pvc", "p"])
    assert r.exit_code == 0 and "completionMode: Indexed" in r.output

