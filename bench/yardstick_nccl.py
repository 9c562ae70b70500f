#!/usr/bin/env python3
"""Yardstick for `gpu-validate bench nccl`: plain torch.distributed all-reduce, nothing of gpuforge imported.

Run under torchrun (env:// rendezvous), one process per GPU. Per size: `warmup` untimed calls, then `iters` calls
between two CUDA events on each rank, the slowest rank's mean counts; busbw = size / time x 2(n-1)/n
(nccl-tests). Prints one JSON line per size on rank 0.

    torchrun --standalone --nproc-per-node 2 bench/yardstick_nccl.py --sizes 1M,1G,8G
"""

import argparse
import json
import os

import torch
import torch.distributed as dist


def parse_size(s: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,8M,64M,512M,1G,8G")
    ap.add_argument("--iters", type=int, default=0, help="0: 20 up to 64 MiB, 10 up to 1 GiB, else 5")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per size first")
    a = ap.parse_args()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    world, rank = dist.get_world_size(), dist.get_rank()
    for size in (parse_size(s) for s in a.sizes.split(",")):
        n = size // 4 // world * world
        x = torch.ones(n, dtype=torch.float32, device="cuda")
        iters = a.iters or (20 if size <= 64 << 20 else 10 if size <= 1 << 30 else 5)
        for _ in range(a.warmup):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(iters):
            dist.all_reduce(x)
        e.record()
        e.synchronize()
        t = torch.tensor([s.elapsed_time(e) / 1e3 / iters], dtype=torch.float64, device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if rank == 0:
            alg = n * 4 / t.item() / 1e9
            print(json.dumps({"op": "all_reduce", "size": n * 4, "ranks": world, "time_us": round(t.item() * 1e6, 1),
                              "algbw": round(alg, 3), "busbw": round(alg * 2 * (world - 1) / world, 3)}), flush=True)
        del x
        torch.cuda.empty_cache()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
