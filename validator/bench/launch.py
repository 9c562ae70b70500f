"""Who am I in a multi-process launch? torchrun, Slurm srun, Open MPI / MPICH mpirun, or nobody (spawn locally).

Each launcher names the rank, the world size, the rank on this node and the ranks per node in its own
variables; a launch whose variables are only half there is an error that names them, never a guess."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from validator.errors import GpuforgeError, UserError

# NVLink SHARP / multicast stays off unless the operator asks: a program using it can take a shared
# host's GPUs out of service (device README), and the benchmarks must not depend on it.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
# Slurm jobs without MASTER_PORT rendezvous on a port derived from the job ID (every task derives the same).
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000


class LaunchError(UserError):
    """The launcher's variables are inconsistent or incomplete: say which, and how to launch instead."""


class PeerTimeout(GpuforgeError):
    """A peer rank did not answer the rendezvous in time: no hang, a message naming the address and the wait."""


DEFAULT_PEER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Launch:
    rank: int
    world: int
    local_rank: int
    launcher: str  # torchrun / slurm / mpi
    local_world: Optional[int] = None  # ranks on this node, when the launcher says
    nodes: Optional[int] = None

    @property
    def multi_node(self) -> bool:
        return (self.nodes or 1) > 1


@dataclass(frozen=True)
class _Scheme:
    launcher: str
    rank: str
    world: str
    local_rank: str
    local_world: Tuple[str, ...]  # first present wins
    nodes: Tuple[str, ...]


_SCHEMES = (
    # torchrun sets GROUP_WORLD_SIZE (agents = nodes) and LOCAL_WORLD_SIZE besides RANK/WORLD_SIZE/LOCAL_RANK.
    _Scheme("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", ("LOCAL_WORLD_SIZE",), ("GROUP_WORLD_SIZE",)),
    _Scheme("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
            ("OMPI_COMM_WORLD_LOCAL_SIZE",), ()),
    _Scheme("mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", ("MPI_LOCALNRANKS",), ()),
    _Scheme("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", ("SLURM_NTASKS_PER_NODE",),
            ("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")),
)
_HOW = {"torchrun": "start it with torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK) or unset the variables",
        "mpi": "start it with mpirun (which sets the rank and size together) or unset the variables",
        "slurm": "start it with srun (which sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or unset the variables"}


def _int(env: Mapping[str, str], name: str, launcher: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise LaunchError(f"{launcher} launch: {name}={env[name]!r} is not an integer", hint=_HOW[launcher]) from None


def _first_int(env: Mapping[str, str], names, launcher: str) -> Optional[int]:
    for n in names:
        if n in env and env[n].strip():
            m = re.match(r"\s*(\d+)", env[n])  # SLURM_NTASKS_PER_NODE may read "4(x2)"
            if not m:
                raise LaunchError(f"{launcher} launch: {n}={env[n]!r} is not a count", hint=_HOW[launcher])
            return int(m.group(1))
    return None


def _slurm_batch_step(env: Mapping[str, str]) -> bool:
    """An sbatch script itself (SLURM_PROCID=0, no srun step): an allocation, not a launch of ranks."""
    return env.get("SLURM_PROCID", "").strip() == "0" and "SLURM_STEP_ID" not in env and "SLURM_STEPID" not in env


def detect(env: Mapping[str, str]) -> Optional[Launch]:
    """The launch this process is part of, from the launcher's variables; None when started alone.

    Raises LaunchError when a launcher's variables are half set (a rank without a world size or the other
    way round, non-integers, a rank outside the world). A Slurm allocation alone (sbatch's SLURM_PROCID=0
    without an srun step, or an srun of one task) is not a launch: we then spawn one rank per GPU."""
    for s in _SCHEMES:
        has_r, has_w = s.rank in env, s.world in env
        if not has_r and not has_w:
            continue
        if has_r != has_w:
            if s.launcher == "slurm" and not has_w and _slurm_batch_step(env):
                continue
            present, missing = (s.rank, s.world) if has_r else (s.world, s.rank)
            raise LaunchError(f"{s.launcher} launch half set: {present} is set but {missing} is not",
                              hint=_HOW[s.launcher])
        rank, world = _int(env, s.rank, s.launcher), _int(env, s.world, s.launcher)
        if world < 1 or not 0 <= rank < world:
            raise LaunchError(f"{s.launcher} launch: {s.rank}={rank} is not a rank of {s.world}={world}",
                              hint=_HOW[s.launcher])
        if s.launcher == "slurm" and world == 1:
            continue
        local_rank = _int(env, s.local_rank, s.launcher) if s.local_rank in env else rank
        local_world = _first_int(env, s.local_world, s.launcher)
        nodes = _first_int(env, s.nodes, s.launcher)
        if nodes is None and local_world:
            nodes = -(-world // local_world)
        if local_world is not None and not 0 <= local_rank < local_world:
            raise LaunchError(f"{s.launcher} launch: local rank {local_rank} is not below the {local_world} "
                              f"ranks per node ({s.local_rank}, {'/'.join(s.local_world)})", hint=_HOW[s.launcher])
        return Launch(rank, world, local_rank, s.launcher, local_world, nodes)
    return None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: 'gpu[07-09,12],login1' -> 'gpu07' (what `scontrol show hostnames` prints first)."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m or not m.group(1):
        raise LaunchError(f"slurm launch: cannot read the node list {nodelist!r}")
    prefix, rng = m.group(1), m.group(3)
    if not rng:
        return prefix
    first = rng.split(",")[0].split("-")[0]
    return prefix + first


def rendezvous_env(launch: Launch, env: Mapping[str, str]) -> dict:
    """MASTER_ADDR/PORT/RANK/WORLD_SIZE for torch's env:// init; raises LaunchError when they cannot be known.

    torchrun sets them; under srun the first node of the step (or job) and a port from the job ID are used
    unless MASTER_ADDR/MASTER_PORT are exported; under mpirun they must be exported (-x MASTER_ADDR ...)."""
    out = {"RANK": str(launch.rank), "WORLD_SIZE": str(launch.world), "LOCAL_RANK": str(launch.local_rank)}
    addr, port = env.get("MASTER_ADDR", "").strip(), env.get("MASTER_PORT", "").strip()
    if launch.launcher == "slurm":
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not addr and nodelist:
            addr = first_host(nodelist)
        if not port and env.get("SLURM_JOB_ID", "").isdigit():
            port = str(SLURM_PORT_BASE + int(env["SLURM_JOB_ID"]) % SLURM_PORT_SPAN)
    if not addr:
        if launch.launcher == "torchrun":
            raise LaunchError("torchrun launch without MASTER_ADDR", hint="start the benchmark through torchrun itself")
        where = "srun without SLURM_STEP_NODELIST/SLURM_JOB_NODELIST" if launch.launcher == "slurm" else "mpirun"
        raise LaunchError(f"{where}: no rendezvous address for rank 0",
                          hint="export MASTER_ADDR=<first node> MASTER_PORT=<free port> and pass them to every "
                               "rank (mpirun -x MASTER_ADDR -x MASTER_PORT)")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise LaunchError(f"MASTER_PORT={port!r} is not a TCP port")
    out["MASTER_ADDR"] = addr
    out["MASTER_PORT"] = port or "29500"
    return out


def init_group(dist, backend: str, init_method: str, rank: int, world: int, timeout_s: float, **kw) -> None:
    """torch.distributed.init_process_group with one timeout for the rendezvous and every collective after it;
    a peer that never shows up becomes PeerTimeout, not a hang or a torch traceback."""
    import datetime

    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        try:
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout,
                                    **kw)
        except TypeError:  # torch < 2.3 has no device_id (eager NCCL init)
            kw.pop("device_id", None)
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout,
                                    **kw)
    except RuntimeError as e:  # DistNetworkError / DistStoreError are RuntimeErrors
        text = str(e)
        if not re.search(r"time(d)? ?out|timeout|refused|connect", text, re.I):
            raise
        where = init_method if not init_method.startswith("env://") else \
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        who = "the other ranks did not join" if rank == 0 else "rank 0 did not answer"
        raise PeerTimeout(f"rank {rank} of {world}: {who} at {where} within {timeout_s:g} s "
                          f"({text.splitlines()[0][:200]})",
                          hint="start every rank (every node) within the timeout, check that MASTER_ADDR:MASTER_PORT "
                               "is reachable from each node (firewall, interface), or raise --peer-timeout") from None


def gather_json(torch, dist, obj, device, group=None) -> list:
    """Every rank's JSON-able obj, on every rank (all_gather_object needs numpy; this needs only tensors)."""
    import json

    data = json.dumps(obj).encode()
    n = torch.tensor([len(data)], dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    width = max(int(x.item()) for x in sizes)
    buf = torch.zeros(width, dtype=torch.uint8, device=device)
    buf[:len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=device)
    bufs = [torch.zeros_like(buf) for _ in range(world)]
    dist.all_gather(bufs, buf, group=group)
    return [json.loads(bytes(b[:int(k.item())].tolist()).decode()) for b, k in zip(bufs, sizes)]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a single-node rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multicast_off(environ=os.environ) -> None:
    for k, v in MULTICAST_OFF.items():
        environ.setdefault(k, v)


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed benchmark leaves no rank holding a GPU."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
