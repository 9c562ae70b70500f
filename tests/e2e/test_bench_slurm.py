"""`gpu-validate bench nccl` launched by a real srun (one-host Slurm cluster, Debian slurm-wlm + munge): two tasks
join one launch from Slurm's own variables, rendezvous on the first host of the step's node list at the port
derived from the job ID, and run the collectives over gloo; rank 0 holds the results."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster
from validator import subp

pytest.importorskip("torch", reason="PyTorch not installed: pip install '.[test]'")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not shutil.which("srun") or not shutil.which("munged"),
                                 reason="slurm-wlm/munge not installed (scripts/host-deps.sh installs them)")]


def test_srun_two_tasks_one_launch(tmp_path):
    cmd = (f"cd {ROOT} && exec {sys.executable} -m validator bench nccl --backend gloo --engine torch "
           f"--ops all_reduce --min-bytes 64K --max-bytes 64K --iters 2 --warmup-iters 1 --peer-timeout 60 "
           f"--save {tmp_path}/task$SLURM_PROCID.json")
    with slurm_cluster(cpus=2) as env:
        env = dict(env, PYTHONPATH=str(ROOT))
        res = subp.run(["srun", "--ntasks=2", "--time=5", "sh", "-c", cmd], env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = [json.loads((tmp_path / f"task{i}.json").read_text())["data"]["bench"]["benchmarks"][0] for i in (0, 1)]
    rank0, other = runs
    assert rank0["errors"] == [] and rank0["info"]["ranks"] == 2, rank0
    (fig,) = rank0["figures"]
    assert fig["name"] == "all_reduce" and fig["meta"]["wrong"] == 0 and fig["value"] > 0
    assert fig["meta"]["nodes"] == 1  # two tasks of one node: one node, as srun says
    assert "results are on rank 0" in other["skipped"]
