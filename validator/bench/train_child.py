"""Child side of `bench train`: the built-in GPT on synthetic tokens, bf16 autocast, fused AdamW, tokens/s.

One process per GPU (DDP for models that fit one card, FSDP2 sharding for larger ones); also runs a tiny
config on the CPU so CI exercises the same loop."""

from __future__ import annotations

import json
import os
import time

from validator import events
from validator.bench import gpt
from validator.bench import launch as launchmod
from validator.bench.results import BenchRun, Figure


def _setup(torch, cfg, device, params: dict, world: int):
    model = gpt.build(torch, cfg).to(device)
    cuda = device.type == "cuda"
    if world > 1:
        if cfg.min_gpus > 1 or params.get("fsdp"):
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for blk in model.blocks:
                fully_shard(blk, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[device.index] if cuda else None, gradient_as_bucket_view=True)
    inner = model.module if hasattr(model, "module") else model
    if params.get("compile", cuda):
        # Regional compilation: every block shares one compiled graph, so compile time does not grow with depth.
        for i, blk in enumerate(inner.blocks):
            inner.blocks[i] = torch.compile(blk, dynamic=False)
    kw = {"fused": True} if cuda else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **kw)
    return model, opt


def _steps(torch, model, opt, cfg, batch: int, n: int, device, gen):
    cuda = device.type == "cuda"
    losses = []
    for _ in range(n):
        idx = torch.randint(0, cfg.vocab, (batch, cfg.seq + 1), device=device, generator=gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    if cuda:
        torch.cuda.synchronize()
    return [float(x) for x in losses]


def rank_main(rank: int, world: int, local_rank: int, params: dict, init_method: str = ""):
    import torch

    cfg = gpt.get_config(params.get("model", "gpt-1.2b"))
    use_cuda = params.get("device", "cuda") == "cuda" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        import torch.distributed as dist

        launchmod.multicast_off()
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank,
                                world_size=world)
    torch.manual_seed(1234 + rank)
    gen = torch.Generator(device=device).manual_seed(99 + rank)
    batch = int(params.get("micro_batch", 8))
    warmup, steps = int(params.get("warmup", 5)), int(params.get("steps", 20))
    if rank != 0:
        events.mute()  # rank 0 reports progress for all
    run = BenchRun("train")
    tried = []
    try:
        while True:
            tried.append(batch)
            try:
                model, opt = _setup(torch, cfg, device, params, world)
                t_c = time.perf_counter()
                _steps(torch, model, opt, cfg, batch, warmup, device, gen)
                compile_s = time.perf_counter() - t_c
                t0 = time.perf_counter()
                losses = _steps(torch, model, opt, cfg, batch, steps, device, gen)
                dt = time.perf_counter() - t0
                break
            except torch.OutOfMemoryError:
                if batch == 1 or world > 1:
                    raise
            # Out of memory: free everything the failed try held (outside the except block, whose
            # traceback still pins the activations), then halve the micro-batch.
            model = opt = None
            import gc

            gc.collect()
            torch.cuda.empty_cache()
            torch._dynamo.reset()
            batch //= 2
        peak_mem = torch.cuda.max_memory_allocated(device) / (1 << 30) if use_cuda else 0.0
        tokens = batch * cfg.seq * steps * world
        tflops = cfg.flops_per_iter(batch * world) * steps / dt / 1e12
        where = None if world > 1 else (local_rank if use_cuda else None)
        meta = {"model": cfg.name, "params": cfg.params, "micro_batch": batch, "seq": cfg.seq, "ranks": world,
                "steps": steps, "step_ms": round(dt / steps * 1e3, 1), "loss_first": round(losses[0], 4),
                "loss_last": round(losses[-1], 4), "batches_tried": tried, "peak_mem_gib": round(peak_mem, 1),
                "warmup_s": round(compile_s, 1), "device": str(device)}
        run.figures.append(Figure("train", f"{cfg.name}_tokens_per_s", tokens / dt, "tokens/s", where, gate=False,
                                  detail=f"micro-batch {batch} x seq {cfg.seq} x {world} rank(s)", meta=meta))
        run.figures.append(Figure("train", f"{cfg.name}_tflops", tflops, "TFLOP/s", where,
                                  detail="Megatron model FLOPs 72 B s l h^2 (1 + s/6h + V/12lh) / step time",
                                  meta=meta))
        run.info = {"torch": torch.__version__, "model": cfg.name, "ranks": world,
                    "compile": bool(params.get("compile", use_cuda))}
        if not all(x == x and abs(x) < 1e4 for x in losses):
            run.errors.append(f"training loss not finite: {losses}")
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return run if rank == 0 else None


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
        with open(path) as f:
            r = BenchRun.from_dict(json.load(f))
        os.unlink(path)
    if use_cuda:
        from validator.bench import devinfo

        r.gpus = devinfo.gpu_infos(torch)
    return r
