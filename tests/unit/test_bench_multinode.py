"""`gpu-validate bench nccl` as each launcher starts it: two ranks as two "nodes" on this host, gloo between CPU
processes (the NCCL path differs only in the backend). torchrun is the real launcher; srun's and mpirun's
variables are set the way those launchers set them; a silent peer must end in a clear error, not a hang."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="PyTorch not installed: pip install '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ["-m", "validator", "bench", "nccl", "--backend", "gloo", "--engine", "torch", "--ops", "all_reduce,all_gather",
         "--min-bytes", "64K", "--max-bytes", "256K", "--iters", "2", "--warmup-iters", "1"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "MPI_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(kw)
    return env


def _start(argv, env, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log


def _wait(procs, timeout=240):
    deadline = time.time() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.time())))
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
    return codes


def _bench(path) -> dict:
    """The raw run from the report a rank saved (--save FILE.json keeps it under data.bench)."""
    return json.loads(path.read_text())["data"]["bench"]["benchmarks"][0]


def _rank0(tmp_path) -> dict:
    return _bench(tmp_path / "node0.json")


def _assert_two_node_result(b, launcher_nodes=2):
    assert b["errors"] == [] and b["info"]["ranks"] == 2, b
    figs = {f["name"]: f for f in b["figures"]}
    assert sorted(figs) == ["all_gather", "all_reduce"]
    for f in figs.values():
        assert f["meta"]["wrong"] == 0 and f["value"] > 0 and f["meta"]["nodes"] == launcher_nodes
        assert "gloo (TCP)" in f["detail"] and len(f["meta"]["sweep"]) == 2  # 64K, 256K
    assert b["info"]["iters"] == 2 and b["info"]["warmup_iters"] == 1


@pytest.mark.subprocess
def test_torchrun_two_nodes_c10d_rendezvous(tmp_path):
    port = _port()
    procs = []
    for n in (0, 1):
        argv = ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "gpuforge-test",
                "--rdzv-conf", f"is_host={'true' if n == 0 else 'false'}",
                *BENCH, "--save", str(tmp_path / f"node{n}.json")]
        procs.append(_start(argv, _env(), tmp_path, f"node{n}"))
        time.sleep(1)
    codes = _wait(procs)
    logs = {n: (tmp_path / f"node{n}.log").read_text() for n in (0, 1)}
    assert codes == [0, 0], logs
    # The c10d rendezvous, not the start order, decides which node holds rank 0 (and the results).
    runs = [_bench(tmp_path / f"node{n}.json") for n in (0, 1)]
    rank0 = [b for b in runs if not b["skipped"]]
    other = [b for b in runs if b["skipped"]]
    assert len(rank0) == 1 and len(other) == 1, runs
    _assert_two_node_result(rank0[0])
    assert "results are on rank 0" in other[0]["skipped"]


def _two_ranks(tmp_path, env_of):
    procs = [_start([*BENCH, "--save", str(tmp_path / f"node{r}.json")], _env(**env_of(r)), tmp_path, f"node{r}")
             for r in (0, 1)]
    codes = _wait(procs)
    assert codes == [0, 0], [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    return _rank0(tmp_path)


@pytest.mark.subprocess
def test_srun_two_nodes_rendezvous_from_slurm_variables(tmp_path):
    job = _port() - 20000  # the port srun tasks derive from the job ID: 20000 + job % 20000
    b = _two_ranks(tmp_path, lambda r: {
        "SLURM_PROCID": str(r), "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost"})
    _assert_two_node_result(b)


@pytest.mark.subprocess
def test_mpirun_two_nodes_with_exported_master(tmp_path):
    port = _port()
    b = _two_ranks(tmp_path, lambda r: {
        "OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    _assert_two_node_result(b)


@pytest.mark.subprocess
@pytest.mark.parametrize("rank,says", [(1, "rank 0 did not answer"), (0, "the other ranks did not join")])
def test_a_peer_that_never_answers_times_out_with_a_clear_error(tmp_path, rank, says):
    env = _env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_port()))
    t0 = time.time()
    p = _start([*BENCH, "--peer-timeout", "4", "--save", str(tmp_path / "node0.json")], env, tmp_path, "node0")
    codes = _wait([p], timeout=120)
    out = (tmp_path / "node0.log").read_text()
    assert codes == [1], out
    assert time.time() - t0 < 100
    assert says in out and "within 4 s" in out and "PeerTimeout" in out
