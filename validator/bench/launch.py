"""Who am I in a multi-process launch? torchrun, Slurm srun, Open MPI / PMI mpirun, or nobody (spawn locally)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

# NVLink SHARP / multicast stays off unless the operator asks: a program using it can take a shared
# host's GPUs out of service (device README), and the benchmarks must not depend on it.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class Launch:
    rank: int
    world: int
    local_rank: int
    launcher: str  # torchrun / slurm / mpi


_SCHEMES = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def detect(env: Mapping[str, str]) -> Optional[Launch]:
    """The launch this process is part of, from the launcher's variables; None when started alone.

    A Slurm allocation alone (SLURM_PROCID=0, one task) is not a launch: we then spawn one rank per GPU."""
    for launcher, r, w, lr in _SCHEMES:
        if r in env and w in env:
            world = int(env[w])
            if launcher == "slurm" and world <= 1:
                continue
            rank = int(env[r])
            return Launch(rank, world, int(env.get(lr, rank)), launcher)
    return None


def rendezvous_env(launch: Launch, env: Mapping[str, str]) -> dict:
    """MASTER_ADDR/PORT/RANK/WORLD_SIZE for torch's env:// init; raises when a multi-node launch lacks them."""
    out = {"RANK": str(launch.rank), "WORLD_SIZE": str(launch.world), "LOCAL_RANK": str(launch.local_rank)}
    if "MASTER_ADDR" not in env:
        if launch.launcher == "torchrun":
            raise ValueError("torchrun did not set MASTER_ADDR")
        raise ValueError(f"{launch.launcher} launch without MASTER_ADDR/MASTER_PORT: export them (the first node's "
                         "address and a free port) before srun/mpirun")
    out["MASTER_ADDR"] = env["MASTER_ADDR"]
    out["MASTER_PORT"] = env.get("MASTER_PORT", "29500")
    return out


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
