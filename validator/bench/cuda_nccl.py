"""Child side of `bench nccl`: collectives through torch.distributed, one process per GPU.

Bandwidths follow nccl-tests: size = the largest buffer's bytes, algbw = size / time,
busbw = algbw x factor (formulas.bus_factor); time = the slowest rank's mean over `iters`."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from typing import Optional

from validator import events, userfile
from validator.bench import launch as launchmod
from validator.bench import ncclenv
from validator.bench.formulas import COLLECTIVES, algbw_gbs, bus_factor, human_bytes, size_sweep
from validator.bench.parsers import parse_nccl_info
from validator.bench.results import BenchRun, Figure


def _iters(size: int) -> int:
    return 20 if size <= (64 << 20) else 10 if size <= (1 << 30) else 5


class _Op:
    """Buffers and one call of a collective for a given total size in bytes (float32 elements)."""

    def __init__(self, torch, dist, op: str, size: int, world: int, rank: int, device):
        self.torch, self.dist, self.op, self.world = torch, dist, op, world
        n = max(world, size // 4 // world * world)  # elements, divisible by the world size
        self.size = n * 4
        f = torch.float32
        if op == "all_reduce" or op == "broadcast":
            self.a = torch.empty(n, dtype=f, device=device)
            self.b = None
        elif op == "all_gather":
            self.b = torch.empty(n, dtype=f, device=device)
            self.a = torch.empty(n // world, dtype=f, device=device)
        elif op == "reduce_scatter":
            self.a = torch.empty(n, dtype=f, device=device)
            self.b = torch.empty(n // world, dtype=f, device=device)
        elif op == "alltoall":
            self.a = torch.empty(n, dtype=f, device=device)
            self.b = torch.empty(n, dtype=f, device=device)
        else:
            raise ValueError(f"unknown collective {op}")
        self.rank = rank

    def __call__(self):
        d, op = self.dist, self.op
        if op == "all_reduce":
            d.all_reduce(self.a)
        elif op == "broadcast":
            d.broadcast(self.a, src=0)
        elif op == "all_gather":
            d.all_gather_into_tensor(self.b, self.a)
        elif op == "reduce_scatter":
            d.reduce_scatter_tensor(self.b, self.a)
        else:
            d.all_to_all_single(self.b, self.a)

    def check(self) -> int:
        """Fill with known values, run once, count wrong elements on this rank."""
        torch, w, r = self.torch, self.world, self.rank
        total = w * (w + 1) / 2
        if self.op == "all_reduce":
            self.a.fill_(r + 1)
            self()
            return int((self.a != total).sum().item())
        if self.op == "broadcast":
            self.a.fill_(42.0 if r == 0 else -1.0)
            self()
            return int((self.a != 42.0).sum().item())
        if self.op == "all_gather":
            self.a.fill_(r)
            self()
            want = torch.arange(w, dtype=self.b.dtype, device=self.b.device).repeat_interleave(self.a.numel())
            return int((self.b != want).sum().item())
        if self.op == "reduce_scatter":
            self.a.fill_(r + 1)
            self()
            return int((self.b != total).sum().item())
        chunk = self.a.numel() // w
        self.a.copy_(torch.arange(w, device=self.a.device, dtype=self.a.dtype).repeat_interleave(chunk) + r * w)
        self()
        want = (torch.arange(w, device=self.a.device, dtype=self.a.dtype) * w + r).repeat_interleave(chunk)
        return int((self.b != want).sum().item())


def _time(torch, dist, fn, iters: int, cuda: bool, device, warmup: int = 3) -> float:
    """Mean seconds per call on this rank, then the slowest rank's (all-reduce MAX)."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(iters):
            fn()
        e.record()
        e.synchronize()
        t = s.elapsed_time(e) / 1e3 / iters
    else:
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        t = (time.perf_counter() - t0) / iters
    tt = torch.tensor([t], dtype=torch.float64, device=device)
    dist.all_reduce(tt, op=dist.ReduceOp.MAX)
    return float(tt.item())


def _log_path(params: dict, rank: int) -> str:
    d = params.get("log_dir") or tempfile.gettempdir()
    return os.path.join(d, f"gpuforge-nccl-{os.getpid()}-rank{rank}.log")


def _transport(params: dict, log_path: Optional[str]) -> dict:
    """This rank's view: host, NCCL's own INFO log parsed, and the RDMA devices of its node."""
    from validator import fabric
    from validator.node import Node

    t = {"host": socket.gethostname(), "log": None}
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            t["log"] = parse_nccl_info(f.read()).to_dict()
    try:
        hcas = fabric.read_hcas(Node("/"))
    except Exception:  # a node whose sysfs cannot be read still benchmarks
        hcas = []
    t["ib_devices"] = [p.name for h in hcas for p in h.ports]
    t["ib_up"] = [p.name for h in hcas for p in h.ports if p.up]
    t["ib_up_gbps"] = sum(p.rate_gbps or 0 for h in hcas for p in h.ports if p.up)
    return t


def rank_main(rank: int, world: int, local_rank: int, params: dict, init_method: str, nodes: Optional[int] = None):
    """One rank: every collective over the sweep; rank 0 returns the BenchRun, others None."""
    import torch
    import torch.distributed as dist

    launchmod.multicast_off()
    cuda = torch.cuda.is_available() and params.get("backend", "nccl") == "nccl"
    log_path = None
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        if params.get("nccl_log", True):
            log_path = _log_path(params, rank)
            os.environ.update(ncclenv.debug_env(os.environ, log_path))  # read by NCCL at its first init
    else:
        device = torch.device("cpu")
    kw = {"device_id": device} if cuda else {}
    launchmod.init_group(dist, "nccl" if cuda else "gloo", init_method, rank, world,
                         float(params.get("peer_timeout", launchmod.DEFAULT_PEER_TIMEOUT_S)), **kw)
    if rank != 0:
        events.mute()  # rank 0 reports progress for all
    run = BenchRun("nccl")
    sizes = size_sweep(int(params["min_bytes"]), int(params["max_bytes"]), int(params.get("factor", 4)))
    ops = params.get("ops") or list(COLLECTIVES)
    iters, warmup = int(params.get("iters") or 0), int(params.get("warmup_iters", 3))
    t0 = time.perf_counter()
    try:
        for op in ops:
            sweep, wrong, err = [], 0, None
            try:
                wrong = _Op(torch, dist, op, min(sizes[0], 1 << 20), world, rank, device).check()
                for size in sizes:
                    o = _Op(torch, dist, op, size, world, rank, device)
                    t = _time(torch, dist, o, iters or _iters(size), cuda, device, warmup)
                    alg = algbw_gbs(o.size, t)
                    sweep.append([o.size, round(t * 1e6, 2), round(alg, 3), round(alg * bus_factor(op, world), 3)])
                    if rank == 0:
                        events.emit("nccl_size", op=op, size=o.size, time_us=sweep[-1][1], algbw=sweep[-1][2],
                                    busbw=sweep[-1][3], ranks=world)
                    del o
                    if cuda:
                        torch.cuda.empty_cache()
            except Exception as e:  # e.g. an op the gloo backend lacks; the other collectives still run
                err = f"{op}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            wt = torch.tensor([wrong], dtype=torch.int64, device=device)
            dist.all_reduce(wt)
            wrong = int(wt.item())
            if err:
                run.errors.append(err)
            if sweep:
                run.figures.append(_figure(op, sweep, world, wrong))
            if wrong:
                run.errors.append(f"{op}: {wrong} wrong elements in the correctness check")
        # NCCL has set up its connections by now: its log names every transport it chose.
        views = launchmod.gather_json(torch, dist, _transport(params, log_path), device)
        summary = transport_summary(views, nodes)
        for i, f in enumerate(run.figures):
            run.figures[i] = _with_transport(f, summary, cuda)
        run.info = {"ranks": world, "backend": "nccl" if cuda else "gloo", "sizes": sizes,
                    "torch": torch.__version__, "wall_s": round(time.perf_counter() - t0, 1),
                    "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
                    "iters": iters or "auto", "warmup_iters": warmup, "transport": summary,
                    "env": {k: os.environ.get(k) for k in launchmod.MULTICAST_OFF}}
        dist.barrier()
    finally:
        dist.destroy_process_group()
        if log_path and not params.get("keep_nccl_log") and os.path.exists(log_path):
            os.unlink(log_path)
    return run if rank == 0 else None


def _figure(op: str, sweep: list, world: int, wrong: int) -> Figure:
    size, t_us, alg, bus = sweep[-1]
    detail = f"busbw at {human_bytes(size)}, {world} ranks, algbw {alg:.1f} GB/s"
    if world == 1:  # no bus to measure: NCCL ran and its results were checked
        bus, detail = 0.0, f"1 rank: functional check only, {wrong} wrong; busbw needs >= 2 GPUs"
    return Figure("nccl", op, bus, "GB/s", None, gate=world > 1, detail=detail,
                  meta={"size": size, "algbw": alg, "time_us": t_us, "ranks": world, "wrong": wrong, "sweep": sweep})


def transport_summary(views: list, launcher_nodes: Optional[int] = None) -> dict:
    """Every rank's view merged: transports seen (with the ranks that used them), nodes, hosts, RDMA devices.

    nodes: NCCL's own count (nNodes) when its log was read, else the launcher's, else distinct host names."""
    transports: dict = {}
    hosts, ib_up, ib_any, socket_ranks, nnodes, net, line = set(), {}, {}, [], None, set(), {}
    for r, v in enumerate(views):
        if not v:
            continue
        hosts.add(v["host"])
        line[v["host"]] = v.get("ib_up_gbps") or 0
        if v.get("ib_devices"):
            ib_any[v["host"]] = v["ib_devices"]
        if v.get("ib_up"):
            ib_up[v["host"]] = v["ib_up"]
        log = v.get("log") or {}
        for label in log.get("transports", []):
            transports.setdefault(label, []).append(r)
        if "NET/Socket" in log.get("transports", []):
            socket_ranks.append(r)
        if log.get("network"):
            net.add(log["network"])
        if log.get("nnodes"):
            nnodes = max(nnodes or 0, int(log["nnodes"]))
    nodes = nnodes or launcher_nodes or len(hosts) or 1
    return {"transports": {k: sorted(set(v)) for k, v in sorted(transports.items())}, "nodes": nodes,
            "hosts": sorted(hosts), "network": sorted(net), "ib_devices": ib_any, "ib_up": ib_up,
            "socket_ranks": socket_ranks, "log_read": any(v and v.get("log") for v in views),
            "ib_line_gbps": min(line.values()) if line else 0}


def _with_transport(f: Figure, summary: dict, nccl: bool = True) -> Figure:
    via = ", ".join(summary["transports"]) or ("NCCL transport not logged" if nccl else "gloo (TCP)")
    nodes = summary["nodes"]
    meta = dict(f.meta, nodes=nodes, transport=sorted(summary["transports"]), ib_line_gbps=summary["ib_line_gbps"])
    detail = f.detail + (f"; {nodes} nodes" if nodes > 1 else "") + f"; via {via}"
    return Figure(f.bench, f.name, f.value, f.unit, f.gpu, detail, f.gate, meta)


def _spawned(rank: int, world: int, port: int, params: dict, result_path: str):
    launchmod.die_with_parent()
    run = rank_main(rank, world, rank, params, f"tcp://127.0.0.1:{port}", nodes=1)
    if run is not None:
        with open(result_path, "w") as f:
            json.dump(run.to_dict(), f)


def run(params: dict) -> BenchRun:
    import torch

    launchmod.multicast_off()
    launch = launchmod.detect(os.environ)
    if launch is not None:
        os.environ.update(launchmod.rendezvous_env(launch, os.environ))
        r = rank_main(launch.rank, launch.world, launch.local_rank, params, "env://", launch.nodes)
        return r if r is not None else BenchRun("nccl", skipped=f"rank {launch.rank}: results are on rank 0")
    cuda = params.get("backend", "nccl") == "nccl"
    if cuda and not torch.cuda.is_available():
        return BenchRun("nccl", skipped="no CUDA GPU visible to PyTorch (--backend gloo runs the CPU path)")
    world = int(params.get("ranks") or (torch.cuda.device_count() if cuda else 2))
    result_path = params["result_path"] + ".rank0"
    torch.multiprocessing.spawn(_spawned, args=(world, launchmod.free_port(), params, result_path),
                                nprocs=world, join=True)
    run = BenchRun.from_dict(json.loads(userfile.read_text(result_path, "rank 0 result")))
    os.unlink(result_path)
    if cuda:
        from validator.bench import devinfo

        run.gpus = devinfo.gpu_infos(torch)
    if world == 1:
        run.skipped = None
        run.info["note"] = "one GPU: collectives ran as a functional check; bus bandwidth needs >= 2 ranks"
    return run
