"""Parent side: run each benchmark in a child process, wrap the external tools when installed, attach
expectations. Never imports torch."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

from validator import events, subp, userfile
from validator.bench import ncclenv, parsers
from validator.bench.formulas import COLLECTIVES, human_bytes
from validator.bench.launch import DEFAULT_PEER_TIMEOUT_S, MULTICAST_OFF, detect
from validator.bench.results import BenchRun, Figure
from validator.errors import CommandError, ConfigError, GpuforgeError

log = logging.getLogger("gpuforge.bench")

SUITES = ("bandwidth", "gemm", "nccl", "train", "rdma")


@dataclass(frozen=True)
class Options:
    """Knobs of every suite; `short()` is the version `gpu-validate run --level full` uses."""

    gpus: tuple = ()
    size_bytes: int = 1 << 30
    reps: int = 20
    gemm_seconds: float = 10.0
    gemm_size: int = 8192
    dtypes: tuple = ("bf16", "fp16", "tf32", "fp32", "fp64")
    nccl_min: int = 1 << 20
    nccl_max: int = 8 << 30
    nccl_factor: int = 4
    nccl_ops: tuple = COLLECTIVES
    nccl_engine: str = "auto"  # auto | torch | nccl-tests
    nccl_backend: str = "nccl"  # gloo: the same collectives between CPU processes (tests, CPU-only nodes)
    nccl_iters: int = 0  # timed calls per size; 0: 20 up to 64 MiB, 10 up to 1 GiB, 5 above
    nccl_warmup: int = 3  # untimed calls per size first
    nccl_env: tuple = ()  # KEY=VALUE overrides of the NCCL settings derived from the node
    peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S  # rendezvous and collectives: a silent peer fails, never hangs
    rdma_mode: str = "loopback"  # loopback | server | client
    rdma_peer: Optional[str] = None  # the server node, in client mode
    rdma_hcas: tuple = ()  # only these HCAs / ports (mlx5_0, mlx5_0:1); () = every port that is up
    rdma_size: int = 8 << 20  # ib_write_bw message size (Azure's health check: 8 MiB)
    rdma_gpudirect: str = "auto"  # auto: when perftest has CUDA; on: required; off: host memory only
    rdma_port_base: int = 18515  # perftest's default TCP port; port i of the node listens on base + i
    train_model: str = "gpt-1.2b"
    train_steps: int = 30  # per-step times vary by ~5 % at the power cap: enough steps to average that out
    train_warmup: int = 6
    micro_batch: Optional[int] = None
    train_device: str = "cuda"
    train_engine: str = "builtin"  # builtin | megatron
    train_scaling: bool = True  # with N > 1 GPUs, also the 1-GPU figure in the same job (scaling efficiency)
    train_dp: Optional[str] = None  # blocks | ddp; None: train_child.DEFAULT_DP
    compile: bool = True
    burn_tools: bool = True  # also run gpu_burn / dcgmi diag when installed
    timeout_s: float = 1800.0
    verbose: bool = False

    @classmethod
    def short(cls, **kw) -> "Options":
        # NCCL still reaches 8 GiB: busbw is gated on the largest size, and the baselines are large-size figures.
        base = dict(reps=20, gemm_seconds=3.0, nccl_max=8 << 30, nccl_factor=8, train_steps=15, train_warmup=4,
                    burn_tools=False, timeout_s=900.0)
        base.update(kw)
        return cls(**base)


@dataclass
class SuiteReport:
    runs: List[BenchRun] = field(default_factory=list)
    topology: Optional[parsers.Topology] = None


def run_child(suite: str, params: dict, timeout: float, verbose: bool = False, env: Optional[dict] = None) -> BenchRun:
    """`python -m validator.bench.worker` in a child with a timeout; its failure becomes the run's error."""
    with tempfile.TemporaryDirectory(prefix="gpuforge-bench-") as tmp:
        pfile, ofile = os.path.join(tmp, "params.json"), os.path.join(tmp, "out.json")
        with open(pfile, "w") as f:
            json.dump(params, f)
        env = dict(env or {}, **{k: os.environ.get(k, v) for k, v in MULTICAST_OFF.items()})
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p)
        t0 = time.perf_counter()
        events.emit("suite", suite=suite)
        with events.follow(os.path.join(tmp, "events.jsonl")) as ev_env:  # live progress, when someone listens
            try:
                subp.run([sys.executable, "-m", "validator.bench.worker", suite, pfile, ofile], timeout=timeout,
                         env=dict(env, **(ev_env or {})), capture=not verbose)
            except CommandError as e:
                return BenchRun(suite, errors=[e.message], seconds=round(time.perf_counter() - t0, 1))
        try:
            # json.loads, not load_json: a diverged loss is NaN in the child's result and a failed figure here
            return BenchRun.from_dict(json.loads(userfile.read_text(ofile, "benchmark result")))
        except (ConfigError, ValueError, KeyError, TypeError) as e:
            return BenchRun(suite, errors=[f"benchmark child wrote no readable result: {e}"])


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def topology() -> Optional[parsers.Topology]:
    try:
        return parsers.parse_topo_matrix(subp.run(["nvidia-smi", "topo", "-m"], timeout=30).stdout)
    except (GpuforgeError, ValueError) as e:
        log.info("no topology: %s", e)
        return None


# ---------------------------------------------------------------- suites
def bandwidth(o: Options) -> BenchRun:
    run = run_child("bandwidth", {"gpus": list(o.gpus), "size_bytes": o.size_bytes, "reps": o.reps},
                    o.timeout_s, o.verbose)
    if shutil.which("nvbandwidth"):
        _add_nvbandwidth(run)
    return run


def _add_nvbandwidth(run: BenchRun) -> None:
    """nvbandwidth's copy-engine tests, as informational figures beside ours."""
    tests = {"host_to_device_memcpy_ce": "nvbw_h2d", "device_to_host_memcpy_ce": "nvbw_d2h",
             "device_to_device_memcpy_read_ce": "nvbw_p2p_read"}
    try:
        out = subp.run(["nvbandwidth", "-t", *tests], timeout=600).stdout
    except GpuforgeError as e:
        run.errors.append(f"nvbandwidth: {e.message.splitlines()[0]}")
        return
    for name, t in parsers.parse_nvbandwidth(out).items():
        if name not in tests or t.waived:
            continue
        for (row, col), v in sorted(t.matrix.items()):
            if v is None:
                continue
            if tests[name] == "nvbw_p2p_read":
                run.figures.append(Figure("bandwidth", f"nvbw_p2p_{col}_{row}", v, "GB/s", row, gate=False,
                                          detail=f"nvbandwidth {name}"))
            else:
                gpu = col if name.startswith("host_to") else row
                run.figures.append(Figure("bandwidth", tests[name], v, "GB/s", gpu, gate=False,
                                          detail=f"nvbandwidth {name}"))


def gemm(o: Options) -> BenchRun:
    params = {"gpus": list(o.gpus), "dtypes": list(o.dtypes), "seconds": o.gemm_seconds, "size": o.gemm_size}
    timeout = o.gemm_seconds * len(o.dtypes) * 3 + 300
    run = run_child("gemm", params, timeout, o.verbose)
    if o.burn_tools and shutil.which("gpu_burn"):
        _add_gpu_burn(run, max(10, int(o.gemm_seconds * len(o.dtypes))))
    if o.burn_tools and shutil.which("dcgmi"):
        _add_dcgmi(run)
    return run


def _add_gpu_burn(run: BenchRun, seconds: int) -> None:
    try:
        out = subp.run(["gpu_burn", str(seconds)], timeout=seconds + 120, ok_codes=(0, 1)).stdout
    except GpuforgeError as e:
        run.errors.append(f"gpu_burn: {e.message.splitlines()[0]}")
        return
    res = parsers.parse_gpu_burn(out)
    for gpu, gf in res.gflops.items():
        run.figures.append(Figure("gemm", "gpu_burn", gf / 1e3, "TFLOP/s", gpu, gate=False,
                                  detail=f"gpu_burn {seconds} s: {res.verdict.get(gpu, '?')}"))
    for gpu, verdict in res.verdict.items():
        if verdict != "OK":
            run.errors.append(f"gpu_burn: GPU{gpu} {verdict} ({res.errors.get(gpu, '?')} errors)")


def _add_dcgmi(run: BenchRun) -> None:
    try:
        out = subp.run(["dcgmi", "diag", "-r", "2"], timeout=900, ok_codes=(0, 1, 226)).stdout
    except GpuforgeError as e:
        run.errors.append(f"dcgmi diag: {e.message.splitlines()[0]}")
        return
    res = parsers.parse_dcgmi_diag(out)
    run.info["dcgmi_diag_r2"] = res
    run.errors.extend(f"dcgmi diag: {x}" for x in parsers.dcgmi_failures(res))


def nccl(o: Options) -> BenchRun:
    launch = detect(os.environ)  # a half-set launcher environment is a usage error before any work
    params = {"gpus": list(o.gpus), "min_bytes": o.nccl_min, "max_bytes": o.nccl_max, "factor": o.nccl_factor,
              "ops": list(o.nccl_ops), "backend": o.nccl_backend, "iters": o.nccl_iters,
              "warmup_iters": o.nccl_warmup, "peer_timeout": o.peer_timeout_s}
    if o.gpus:
        params["ranks"] = len(o.gpus)
    nenv = nccl_settings(o, launch)
    if o.nccl_engine in ("auto", "torch"):
        run = run_child("nccl", params, _child_timeout(o), o.verbose, dict(_visible(o), **nenv.values))
    else:
        run = BenchRun("nccl")
    run.info["nccl_env"] = nenv.to_info()
    # Under torchrun/srun/mpirun every rank runs this: nccl-tests (single process, all local GPUs) would
    # start once per rank, so it only runs when we spawned the ranks ourselves.
    if o.nccl_engine in ("auto", "nccl-tests") and o.nccl_backend == "nccl" and launch is None:
        _add_nccl_tests(run, o)
    return run


def nccl_settings(o: Options, launch) -> "ncclenv.NcclEnv":
    """NCCL_* for the child: derived from this node (HCAs, default route), the environment's, then --nccl-env."""
    from validator.node import Node

    return ncclenv.derive(Node("/"), os.environ, multi_node=bool(launch and launch.multi_node),
                          overrides=ncclenv.parse_overrides(o.nccl_env))


def _child_timeout(o: Options) -> float:
    # The child's own peer timeout must fire first, so its clear error (not a kill) is what the user sees.
    return max(o.timeout_s, o.peer_timeout_s * 2 + 60)


_NCCL_TESTS_BIN = {"all_reduce": "all_reduce_perf", "all_gather": "all_gather_perf",
                   "reduce_scatter": "reduce_scatter_perf", "broadcast": "broadcast_perf",
                   "alltoall": "alltoall_perf"}


def _add_nccl_tests(run: BenchRun, o: Options) -> None:
    """nccl-tests binaries when on PATH (single process, -g all GPUs); gated only when torch did not run."""
    ngpus = len(o.gpus) or _gpu_count()
    gate = not any(f.bench == "nccl" for f in run.figures)
    for op in o.nccl_ops:
        exe = shutil.which(_NCCL_TESTS_BIN[op])
        if not exe:
            continue
        argv = [exe, "-b", str(o.nccl_min), "-e", str(o.nccl_max), "-f", str(o.nccl_factor), "-g", str(ngpus)]
        try:
            out = subp.run(argv, timeout=o.timeout_s).stdout
        except GpuforgeError as e:
            run.errors.append(f"{_NCCL_TESTS_BIN[op]}: {e.message.splitlines()[0]}")
            continue
        res = parsers.parse_nccl_tests(out)
        if not res.rows:
            run.errors.append(f"{_NCCL_TESTS_BIN[op]}: no result rows in its output")
            continue
        last = res.rows[-1]
        sweep = [[r.size, r.time_us, r.algbw, r.busbw] for r in res.rows]
        for size, t_us, alg, bus in sweep:
            events.emit("nccl_size", op=op, size=size, time_us=t_us, algbw=alg, busbw=bus, ranks=ngpus)
        run.figures.append(Figure("nccl", op if gate else f"{op}_nccl_tests", last.busbw, "GB/s", None, gate=gate,
                                  detail=f"nccl-tests busbw at {human_bytes(last.size)}, {ngpus} GPUs",
                                  meta={"size": last.size, "algbw": last.algbw, "ranks": ngpus, "engine": "nccl-tests",
                                        "wrong": last.wrong, "sweep": sweep, "avg_busbw": res.avg_busbw}))


def _gpu_count() -> int:
    try:
        out = subp.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], timeout=30).stdout
        return len([x for x in out.splitlines() if x.strip()])
    except GpuforgeError:
        return 1


def train(o: Options) -> BenchRun:
    if o.train_engine == "megatron":
        from validator.bench import megatron

        return megatron.run(o)
    launch = detect(os.environ)
    params = {"model": o.train_model, "steps": o.train_steps, "warmup": o.train_warmup, "device": o.train_device,
              "compile": o.compile and o.train_device == "cuda", "peer_timeout": o.peer_timeout_s,
              "scaling": o.train_scaling}
    if o.train_dp:
        params["dp"] = o.train_dp
    if o.micro_batch:
        params["micro_batch"] = o.micro_batch
    elif o.train_device == "cuda":
        params["micro_batch"] = 16 if o.train_model == "gpt-1.2b" else 4
    else:
        params["micro_batch"] = 2
    if o.gpus:
        params["ranks"] = len(o.gpus)
    env = _visible(o)
    if o.train_device == "cuda":
        env.update(nccl_settings(o, launch).values)
    return run_child("train", params, _child_timeout(o), o.verbose, env)


def _visible(o: Options) -> dict:
    """One rank per chosen GPU: rank r drives cuda:r, so --gpus 2,3 becomes CUDA_VISIBLE_DEVICES=2,3."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in o.gpus)} if o.gpus else {}


def rdma(o: Options) -> BenchRun:
    from validator.bench import rdma as rdma_mod

    return rdma_mod.run(o.rdma_mode, o.rdma_peer, o.rdma_hcas, o.rdma_size, o.rdma_gpudirect, o.rdma_port_base,
                        test_timeout=120.0, peer_timeout=o.peer_timeout_s)


RUNNERS = {"bandwidth": bandwidth, "gemm": gemm, "nccl": nccl, "train": train, "rdma": rdma}


def run_suites(names, o: Options) -> SuiteReport:
    detect(os.environ)  # a half-set launcher environment is a usage error before any work
    rep = SuiteReport(topology=topology())
    for name in names:
        t0 = time.perf_counter()
        r = RUNNERS[name](o)
        r.seconds = round(time.perf_counter() - t0, 1)
        rep.runs.append(r)
    return rep
