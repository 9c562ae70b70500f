"""Child side of `bench train`: the built-in GPT on synthetic tokens, bf16 autocast, fused AdamW, tokens/s.

One process per GPU (a per-block gradient all-reduce, or DDP, for models that fit one card; FSDP2 sharding for
larger ones); also runs a tiny config on the CPU so CI exercises the same loop."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Optional

from validator import events, userfile
from validator.bench import dataparallel, gpt
from validator.bench import launch as launchmod
from validator.bench.results import BenchRun, Figure


# DDP buckets: about a dozen per step, 25..400 MB. Each bucket's all-reduce costs a launch and runs below its
# best bandwidth; too few leave a long all-reduce after the last gradient. GPT-1.2B on two H200 (NV18),
# 2-GPU step vs 1 GPU: 25 MB buckets 91.8 %, 100 MB 92.4 %, 400 MB 94.5 % (bench/NOTES-gpu.md).
BUCKETS_PER_STEP, BUCKET_MB_MIN, BUCKET_MB_MAX = 12, 25, 400
# How the ranks share gradients when the model fits one GPU: "blocks" (dataparallel.BlockAllReduce) or "ddp".
# GPT-1.2B on two H200 (NV18), 2-GPU step vs 1 GPU in the same job: blocks 95.2-95.4 %, DDP 94.5 %.
DEFAULT_DP = "blocks"


def ddp_bucket_mb(grad_bytes: int) -> int:
    return int(min(BUCKET_MB_MAX, max(BUCKET_MB_MIN, grad_bytes / BUCKETS_PER_STEP / (1 << 20))))


def _setup(torch, cfg, device, params: dict, world: int):
    """(model, optimizer, the block all-reduce or None, how the ranks share the gradients)."""
    with device:  # parameters made and initialised on the GPU: on the host, 1.2B normal_() calls take many seconds
        model = gpt.build(torch, cfg)
    cuda = device.type == "cuda"
    sync, how = None, None
    if world > 1:
        if _sharded(cfg, params):
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for blk in model.blocks:
                fully_shard(blk, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
            how = {"method": "fsdp2"}
        elif params.get("dp", DEFAULT_DP) == "blocks":
            import torch.distributed as dist

            sync = dataparallel.BlockAllReduce(torch, dist, model, int(params.get("dp_blocks") or 0))
            how = sync.info()
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP

            grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            # Same parameters used every step (static graph): DDP skips its per-step unused-parameter search.
            # The model has no buffers, so DDP has none to broadcast before each forward.
            ddp = {"bucket_cap_mb": ddp_bucket_mb(grad_bytes), "static_graph": True, "gradient_as_bucket_view": True}
            model = DDP(model, device_ids=[device.index] if cuda else None, **ddp)
            how = dict(method="ddp", **ddp)
    inner = model.module if hasattr(model, "module") else model
    if params.get("compile", cuda):
        # Regional compilation: every block shares one compiled graph, so compile time does not grow with depth.
        for i, blk in enumerate(inner.blocks):
            inner.blocks[i] = torch.compile(blk, dynamic=False)
    kw = {"fused": True} if cuda else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **kw)
    return model, opt, sync, how


def _sharded(cfg, params: dict) -> bool:
    return cfg.min_gpus > 1 or bool(params.get("fsdp"))


class _Clock:
    """Per-step times without a host sync per step: CUDA events recorded on the stream, read at the end."""

    def __init__(self, torch, cuda: bool):
        self.torch, self.cuda, self.marks = torch, cuda, []

    def mark(self):
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def step_ms(self) -> list:
        if self.cuda:
            self.torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def _steps(torch, model, opt, cfg, batch: int, n: int, device, gen, sync=None) -> tuple:
    """n training steps; (losses, per-step ms). Tokens are drawn on the device, the loss stays there."""
    cuda = device.type == "cuda"
    losses = []
    clock = _Clock(torch, cuda)
    clock.mark()
    for _ in range(n):
        idx = torch.randint(0, cfg.vocab, (batch, cfg.seq + 1), device=device, generator=gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        if sync is not None:
            sync.wait()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        clock.mark()
    ms = clock.step_ms()
    return [float(x) for x in losses], ms


@dataclass
class _Phase:
    ranks: int
    batch: int
    tried: list
    losses: list
    step_ms: list  # this rank's per-step times
    mean_ms: float  # the slowest rank's mean step
    warmup_s: float
    peak_gib: float
    data_parallel: Optional[dict] = None

    def stats(self) -> dict:
        ms = sorted(self.step_ms)
        return {"ranks": self.ranks, "mean_ms": round(self.mean_ms, 2), "median_ms": round(statistics.median(ms), 2),
                "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2), "warmup_s": round(self.warmup_s, 1)}


def _phase(torch, cfg, device, params: dict, world: int, batch: int, dist=None) -> _Phase:
    """Warm-up (compile) then the timed steps; halves the micro-batch on OOM when alone."""
    warmup, steps = int(params.get("warmup", 5)), int(params.get("steps", 20))
    tried = []
    while True:
        tried.append(batch)
        try:
            model, opt, sync, how = _setup(torch, cfg, device, params, world)
            gen = torch.Generator(device=device).manual_seed(99 + (dist.get_rank() if dist else 0))
            t_c = time.perf_counter()
            _steps(torch, model, opt, cfg, batch, warmup, device, gen, sync)
            warm_s = time.perf_counter() - t_c
            losses, ms = _steps(torch, model, opt, cfg, batch, steps, device, gen, sync)
            break
        except torch.OutOfMemoryError:
            if batch == 1 or world > 1:
                raise
        # Out of memory: free everything the failed try held (outside the except block, whose
        # traceback still pins the activations), then halve the micro-batch.
        model = opt = sync = None
        _free(torch, device)
        torch._dynamo.reset()
        batch //= 2
    mean = sum(ms) / len(ms)
    if dist is not None and world > 1:  # the step of the job is the slowest rank's step
        t = torch.tensor([mean], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        mean = float(t.item())
    peak = torch.cuda.max_memory_allocated(device) / (1 << 30) if device.type == "cuda" else 0.0
    model = opt = sync = None
    _free(torch, device)
    return _Phase(world, batch, tried, losses, ms, mean, warm_s, peak, how)


def _free(torch, device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def rank_main(rank: int, world: int, local_rank: int, params: dict, init_method: str = ""):
    import torch

    cfg = gpt.get_config(params.get("model", "gpt-1.2b"))
    use_cuda = params.get("device", "cuda") == "cuda" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _allow_recompiles(torch)
    dist = None
    if world > 1:
        import torch.distributed as dist

        launchmod.multicast_off()
        timeout = float(params.get("peer_timeout", launchmod.DEFAULT_PEER_TIMEOUT_S))
        kw = {}
        if use_cuda:
            # Gradient all-reduces on a high-priority stream: their CTAs get SMs as soon as a bucket is ready
            # instead of queueing behind the backward GEMMs, so less of the reduction is left after backward.
            kw["pg_options"] = dist.ProcessGroupNCCL.Options(is_high_priority_stream=True)
        launchmod.init_group(dist, "nccl" if use_cuda else "gloo", init_method, rank, world, timeout, **kw)
    torch.manual_seed(1234 + rank)
    batch = int(params.get("micro_batch", 8))
    if rank != 0:
        events.mute()  # rank 0 reports progress for all
    run = BenchRun("train")
    try:
        single = None
        if world > 1 and params.get("scaling", True) and not _sharded(cfg, params):
            single, batch = _single_phase(torch, dist, cfg, device, params, rank, batch)
        ph = _phase(torch, cfg, device, params, world, batch, dist)
        run.figures.extend(_figures(cfg, ph, single, local_rank if (use_cuda and world == 1) else None, device,
                                    int(params.get("nodes") or 1)))
        run.info = {"torch": torch.__version__, "model": cfg.name, "ranks": world,
                    "compile": bool(params.get("compile", use_cuda)), "steps": ph.stats(),
                    "data_parallel": ph.data_parallel, "high_priority_nccl_stream": bool(use_cuda and world > 1)}
        if single is not None:
            run.info["steps_1gpu"] = single.stats()
        if not all(x == x and abs(x) < 1e4 for x in ph.losses):
            run.errors.append(f"training loss not finite: {ph.losses}")
    finally:
        if dist is not None:
            dist.destroy_process_group()
    return run if rank == 0 else None


def _single_phase(torch, dist, cfg, device, params: dict, rank: int, batch: int) -> tuple:
    """The 1-GPU figure in the same job: rank 0 trains alone while the others wait on a CPU barrier.
    Returns (the phase on rank 0 else None, the micro-batch that fitted)."""
    import datetime

    ctl = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=2))  # compiling alone takes minutes
    single = _phase(torch, cfg, device, params, 1, batch) if rank == 0 else None
    # Every rank goes on with the micro-batch that fitted on GPU 0 alone.
    got = torch.tensor([single.batch if single is not None else 0], dtype=torch.int64)
    dist.broadcast(got, src=0, group=ctl)
    dist.destroy_process_group(ctl)
    single_batch = int(got.item())
    return single, single_batch


def _allow_recompiles(torch) -> None:
    """Every new model instance recompiles the block graph once (guards on the module); the OOM retries and the
    1-GPU phase make several, and past the default limit of 8 dynamo silently falls back to eager."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))


def _figures(cfg, ph: _Phase, single: Optional[_Phase], where, device, nodes: int = 1) -> list:
    world, batch = ph.ranks, ph.batch
    step_s = ph.mean_ms / 1e3
    tok_s = batch * cfg.seq * world / step_s
    tflops = cfg.flops_per_iter(batch * world) / step_s / 1e12
    meta = {"model": cfg.name, "params": cfg.params, "micro_batch": batch, "seq": cfg.seq, "ranks": world,
            "steps": len(ph.step_ms), "step_ms": round(ph.mean_ms, 1), "loss_first": round(ph.losses[0], 4),
            "loss_last": round(ph.losses[-1], 4), "batches_tried": ph.tried, "peak_mem_gib": round(ph.peak_gib, 1),
            "warmup_s": round(ph.warmup_s, 1), "device": str(device), "step_stats": ph.stats(),
            "nodes": nodes}
    detail = f"micro-batch {batch} x seq {cfg.seq} x {world} rank(s)"
    figs = []
    if single is not None:
        tok_1 = single.batch * cfg.seq / (single.mean_ms / 1e3)
        eff = tok_s / (world * tok_1)
        doublings = math.log2(world)
        per_doubling = eff ** (1 / doublings) if doublings > 0 else 1.0
        detail += f"; {eff * 100:.1f} % of {world} x {tok_1:,.0f} tokens/s on 1 GPU"
        meta.update(tokens_per_s_1gpu=round(tok_1, 1), step_ms_1gpu=round(single.mean_ms, 1),
                    scaling=round(eff, 4), scaling_per_doubling=round(per_doubling, 4))
        figs.append(Figure("train", f"{cfg.name}_scaling", eff, "fraction", None,
                           detail=f"{tok_s:,.0f} tokens/s on {world} GPUs vs {world} x {tok_1:,.0f} on 1 GPU "
                                  f"(per doubling {per_doubling * 100:.1f} %)", meta=dict(meta)))
    figs.insert(0, Figure("train", f"{cfg.name}_tokens_per_s", tok_s, "tokens/s", where, gate=False, detail=detail,
                          meta=meta))
    figs.insert(1, Figure("train", f"{cfg.name}_tflops", tflops, "TFLOP/s", where,
                          detail="Megatron model FLOPs 72 B s l h^2 (1 + s/6h + V/12lh) / step time", meta=meta))
    return figs


def _spawned(rank: int, world: int, port: int, params: dict, result_path: str):
    launchmod.die_with_parent()
    r = rank_main(rank, world, rank, params, f"tcp://127.0.0.1:{port}")
    if r is not None:
        with open(result_path, "w") as f:
            json.dump(r.to_dict(), f)


def run(params: dict) -> BenchRun:
    import torch

    cfg = gpt.get_config(params.get("model", "gpt-1.2b"))
    use_cuda = params.get("device", "cuda") == "cuda"
    if use_cuda and not torch.cuda.is_available():
        # Never fall back to the CPU silently: a GPT-1.2B step there takes minutes and tens of GB.
        return BenchRun("train", skipped="no CUDA GPU visible to PyTorch (use --device cpu --model gpt-tiny "
                                         "for a CPU smoke run)")
    launch = launchmod.detect(os.environ)
    if launch is not None:
        os.environ.update(launchmod.rendezvous_env(launch, os.environ))
        params = dict(params, nodes=launch.nodes)
        r = rank_main(launch.rank, launch.world, launch.local_rank, params, "env://")
        return r if r is not None else BenchRun("train", skipped=f"rank {launch.rank}: results are on rank 0")
    world = int(params.get("ranks") or (torch.cuda.device_count() if use_cuda else 1))
    if world < cfg.min_gpus:
        return BenchRun("train", skipped=f"{cfg.name} needs >= {cfg.min_gpus} GPUs of 80 GB "
                                         f"(weights, gradients and Adam state alone: {cfg.params * 16 / 1e9:.0f} GB); "
                                         f"this node has {world}")
    if world == 1:
        r = rank_main(0, 1, 0, params)
    else:
        path = params["result_path"] + ".rank0"
        torch.multiprocessing.spawn(_spawned, args=(world, launchmod.free_port(), params, path), nprocs=world)
        r = BenchRun.from_dict(json.loads(userfile.read_text(path, "rank 0 result")))  # NaN allowed: a diverged loss
        os.unlink(path)
    if use_cuda:
        from validator.bench import devinfo

        r.gpus = devinfo.gpu_infos(torch)
    return r
