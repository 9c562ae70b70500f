#!/usr/bin/env python3
"""Experiment (device only, >= 2 GPUs): where does 1 -> N GPU training scaling of the built-in GPT go?

One process per GPU, one process group, the blocks compiled once; then variants in turn, each timed per step
with CUDA events (median, min, max over the timed steps; the slowest rank counts) with NVML power and SM
clock samples: rank 0 alone (the 1-GPU figure, first and last), every rank without DDP (compute only),
DDP as shipped, DDP without all-reduce (no_sync), DDP with larger buckets / static graph / bf16
gradient compression / fewer NCCL CTAs, and no DDP but one all-reduce per group of N blocks (blocksN).
Prints one JSON line per variant.

    python3 bench/exp_train_scaling.py [--model gpt-1.2b] [--micro-batch 16] [--steps 15] [--variants a,b]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from validator.bench import dataparallel, gpt, launch, telemetry  # noqa: E402

VARIANTS = {
    "single": {"ranks": 1},
    "all_no_ddp": {},
    "ddp_shipped": {"ddp": {"gradient_as_bucket_view": True}},
    "ddp_no_sync": {"ddp": {"gradient_as_bucket_view": True}, "no_sync": True},
    "ddp_static": {"ddp": {"gradient_as_bucket_view": True, "static_graph": True, "broadcast_buffers": False}},
    "ddp_b100_static": {"ddp": {"gradient_as_bucket_view": True, "static_graph": True, "broadcast_buffers": False,
                                "bucket_cap_mb": 100}},
    "ddp_b100_static_bf16": {"ddp": {"gradient_as_bucket_view": True, "static_graph": True,
                                     "broadcast_buffers": False, "bucket_cap_mb": 100}, "bf16": True},
    "ddp_b100_static_ctas8": {"ddp": {"gradient_as_bucket_view": True, "static_graph": True,
                                      "broadcast_buffers": False, "bucket_cap_mb": 100}, "max_ctas": 8},
    "ddp_b400_static": {"ddp": {"gradient_as_bucket_view": True, "static_graph": True, "broadcast_buffers": False,
                                "bucket_cap_mb": 400}},
    # No DDP: each group of blocks all-reduced (AVG, coalesced) straight on its gradients once its backward is done.
    "blocks1": {"dp_blocks": 1},
    "blocks3": {"dp_blocks": 3},
    "blocks6": {"dp_blocks": 6},
    "single_again": {"ranks": 1},
}


def steps(torch, model, opt, cfg, batch, n, device, gen, no_sync=False, sync=None):
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    ev[0].record()
    for i in range(n):
        idx = torch.randint(0, cfg.vocab, (batch, cfg.seq + 1), device=device, generator=gen)
        ctx = model.no_sync() if no_sync else contextlib.nullcontext()
        with ctx:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(idx[:, :-1], idx[:, 1:])
            loss.backward()
        if sync is not None:
            sync.wait()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ev[i + 1].record()
    torch.cuda.synchronize()
    return [ev[i].elapsed_time(ev[i + 1]) for i in range(n)]


def variant(name, spec, torch, dist, cfg, rank, world, device, ctl, a):
    from torch.nn.parallel import DistributedDataParallel as DDP

    active = spec.get("ranks", world) > rank
    pg = None
    if spec.get("max_ctas"):  # every rank creates the group, in the same order
        opts = dist.ProcessGroupNCCL.Options()
        opts.config.max_ctas = spec["max_ctas"]
        pg = dist.new_group(list(range(world)), backend="nccl", pg_options=opts)
    out = None
    sampler = telemetry.Sampler(telemetry.nvml_reader() if rank == 0 else None, 0.25)
    if active:
        torch.manual_seed(1234 + rank)
        gen = torch.Generator(device=device).manual_seed(99 + rank)
        with device:
            model = gpt.build(torch, cfg)
        sync = None
        if spec.get("dp_blocks"):
            sync = dataparallel.BlockAllReduce(torch, dist, model, spec["dp_blocks"])
        if spec.get("ddp"):
            model = DDP(model, device_ids=[device.index], process_group=pg, **spec["ddp"])
            if spec.get("bf16"):
                from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

                model.register_comm_hook(pg, default_hooks.bf16_compress_hook)
        inner = model.module if hasattr(model, "module") else model
        for i, blk in enumerate(inner.blocks):
            inner.blocks[i] = torch.compile(blk, dynamic=False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        t0 = time.perf_counter()
        steps(torch, model, opt, cfg, a.micro_batch, a.warmup, device, gen, spec.get("no_sync", False), sync)
        warm = time.perf_counter() - t0
    dist.barrier(group=ctl)
    with sampler:
        if active:
            t0 = time.perf_counter()
            ts = steps(torch, model, opt, cfg, a.micro_batch, a.steps, device, gen, spec.get("no_sync", False), sync)
            wall = time.perf_counter() - t0
            out = {"rank": rank, "median_ms": statistics.median(ts), "mean_ms": statistics.fmean(ts),
                   "min_ms": min(ts), "max_ms": max(ts), "wall_ms_per_step": wall / a.steps * 1e3,
                   "warmup_s": round(warm, 1), "steps_ms": [round(x, 2) for x in ts],
                   "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1)}
        dist.barrier(group=ctl)
    if active:
        del model, opt, inner, sync
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    allr = [None] * world
    dist.all_gather_object(allr, out, group=ctl)
    if rank == 0:
        ran = [r for r in allr if r]
        n = len(ran)
        slow = max(ran, key=lambda r: r["mean_ms"])
        tokens = a.micro_batch * cfg.seq * n
        rec = {"variant": name, "ranks": n, "median_ms": round(max(r["median_ms"] for r in ran), 2),
               "mean_ms": round(slow["mean_ms"], 2), "min_ms": round(min(r["min_ms"] for r in ran), 2),
               "max_ms": round(max(r["max_ms"] for r in ran), 2),
               "tok_s_mean": round(tokens / slow["mean_ms"] * 1e3),
               "tok_s_median": round(tokens / max(r["median_ms"] for r in ran) * 1e3),
               "telemetry": sampler.summary(), "per_rank": ran}
        print(json.dumps(rec), flush=True)
        return rec
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt-1.2b")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--high-priority", action="store_true", help="NCCL on a high-priority stream (as bench train)")
    a = ap.parse_args()
    import torch
    import torch.distributed as dist

    launch.multicast_off()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    opts = dist.ProcessGroupNCCL.Options(is_high_priority_stream=True) if a.high_priority else None
    dist.init_process_group("nccl", device_id=device, pg_options=opts)
    ctl = dist.new_group(backend="gloo")
    cfg = gpt.get_config(a.model)
    recs = []
    for name in a.variants.split(","):
        try:
            r = variant(name, VARIANTS[name], torch, dist, cfg, rank, world, device, ctl, a)
        except Exception as e:  # one broken variant does not lose the others
            r = {"variant": name, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(r), flush=True)
            dist.barrier(group=ctl)
        if rank == 0 and r:
            recs.append(r)
    if rank == 0:
        base = next((r["tok_s_mean"] for r in recs if r["variant"] == "single"), None)
        for r in recs:
            if base and "tok_s_mean" in r:
                eff = r["tok_s_mean"] / (r["ranks"] * base)
                print(f"{r['variant']:24s} ranks {r['ranks']}  mean {r['mean_ms']:7.1f} ms  median "
                      f"{r['median_ms']:7.1f}  min {r['min_ms']:7.1f}  max {r['max_ms']:7.1f}  "
                      f"{r['tok_s_mean']:>8d} tok/s  eff {eff * 100:5.1f} %  "
                      + " ".join(f"GPU{g}: {t.get('power_mean_w')} W {t.get('sm_mhz_median')} MHz"
                                 for g, t in sorted(r["telemetry"].items())), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
