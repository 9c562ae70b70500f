"""A real one-host Slurm cluster for tests and benchmarks: munged, slurmctld and slurmd in the foreground, private
key, socket, ports and state in one folder; torn down (daemons ended, folder removed) on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator

from validator import subp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[Dict[str, str]]:
    """Yields the environment (SLURM_CONF) that sbatch/squeue and `gpuforge slurm submit` need."""
    d = Path(tempfile.mkdtemp(prefix="gf-slurm-", dir="/var/tmp"))  # short: socket paths are limited to 108 bytes
    procs = []
    try:
        (d / "munge.key").write_bytes(os.urandom(1024))
        (d / "munge.key").chmod(0o400)
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        host = socket.gethostname()
        conf = d / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=gpuforge-test", f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d}/munge.sock",
            "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/backfill", "MaxArraySize=1001",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO", ""]))
        env = dict(os.environ, SLURM_CONF=str(conf))
        log = open(d / "daemons.out", "ab")
        for argv in (["munged", "-F", "--force", f"--key-file={d}/munge.key", f"--socket={d}/munge.sock",
                      f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"],
                     ["slurmctld", "-D", "-c", "-f", str(conf)],
                     ["slurmd", "-D", "-N", host, "-f", str(conf)]):
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
            time.sleep(1.5 if argv[0] == "munged" else 0.5)
        deadline = time.monotonic() + 90
        while True:
            out = subp.run(["sinfo", "-h", "-o", "%T"], env=env, timeout=30, check=False).stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "".join((d / f).read_text(errors="replace")[-2000:] for f in ("daemons.out", "slurmctld.log", "slurmd.log")
                               if (d / f).exists())
                raise RuntimeError(f"slurm did not come up (sinfo: {out!r}):\n{logs}")
            time.sleep(1)
        yield env
    finally:
        if procs:  # jobs still running (a timeout) are cancelled first: slurmstepd outlives slurmd otherwise
            env = dict(os.environ, SLURM_CONF=str(d / "slurm.conf"))
            subp.run(["scancel", "--user", "root"], env=env, timeout=60, check=False)
            for _ in range(30):
                if not subp.run(["squeue", "-h"], env=env, timeout=30, check=False).stdout.strip():
                    break
                time.sleep(2)
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


def wait_idle(env: Dict[str, str], timeout: float) -> None:
    """Until the queue is empty (every job ended), or TimeoutError."""
    deadline = time.monotonic() + timeout
    while subp.run(["squeue", "-h"], env=env, timeout=30).stdout.strip():
        if time.monotonic() > deadline:
            raise TimeoutError("slurm jobs still queued/running")
        time.sleep(3)
