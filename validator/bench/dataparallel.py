"""Data parallelism without DDP: the gradients of each group of transformer blocks are averaged over the ranks
as soon as the group's backward is done, with one coalesced all-reduce straight on the .grad tensors.

DDP copies every gradient into its buckets first (4.8 GB of fp32 for GPT-1.2B: ~2.5 ms of HBM traffic per
step on an H200, on the GPU that is also running the backward pass); here nothing is copied."""

from __future__ import annotations

import functools
from typing import List

# About a dozen all-reduces per step, like the DDP buckets that measured best: each one holds SMs on both GPUs
# and runs below NCCL's best bandwidth, too few leave a long all-reduce after the backward pass. GPT-1.2B on two
# H200 (NV18), 2-GPU step vs 1 GPU: 1 block per group 93.1 %, 3 blocks 95.2 %, 6 blocks 94.5 % (bench/NOTES-gpu.md).
GROUPS_PER_STEP = 12


def blocks_per_group(n_blocks: int, groups_per_step: int = GROUPS_PER_STEP) -> int:
    return max(1, round(n_blocks / groups_per_step))


def plan(model, per_group: int) -> List[list]:
    """Parameter groups in the order their gradients complete: the blocks from the last one back, `per_group`
    consecutive blocks each, then everything outside the blocks (the embeddings finish last)."""
    blocks = list(model.blocks)[::-1]
    groups = [[p for b in blocks[i:i + per_group] for p in b.parameters()] for i in range(0, len(blocks), per_group)]
    inside = {id(p) for g in groups for p in g}
    rest = [p for p in model.parameters() if id(p) not in inside]
    return [g for g in groups + [rest] if g]


class BlockAllReduce:
    """Hooks on every parameter launch a group's all-reduce (async, mean over the ranks) once all its gradients
    are accumulated; wait() before the optimizer step makes the compute stream wait for them."""

    def __init__(self, torch, dist, model, per_group: int = 0):
        self.torch, self.dist = torch, dist
        self.world = dist.get_world_size()
        # NCCL averages in the reduction; gloo (CPU runs) has no AVG: sum, then divide.
        self.op = dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM
        self.per_group = per_group or blocks_per_group(len(model.blocks))
        self.groups = plan(model, self.per_group)
        with torch.no_grad():  # every rank starts from rank 0's weights
            for p in model.parameters():
                dist.broadcast(p, 0)
        self._left = [len(g) for g in self.groups]
        self._pending: list = []
        for i, g in enumerate(self.groups):
            for p in g:
                p.register_post_accumulate_grad_hook(functools.partial(self._accumulated, i))

    def info(self) -> dict:
        mb = [sum(p.numel() * p.element_size() for p in g) / (1 << 20) for g in self.groups]
        return {"method": "block all-reduce", "blocks_per_group": self.per_group, "all_reduces_per_step": len(mb),
                "group_mb_max": round(max(mb), 1), "op": str(self.op).rsplit(".", 1)[-1]}

    def _accumulated(self, i: int, _param) -> None:
        self._left[i] -= 1
        if self._left[i] == 0:
            grads = [p.grad for p in self.groups[i]]
            with self.dist._coalescing_manager(async_ops=True) as cm:
                for g in grads:
                    self.dist.all_reduce(g, op=self.op)
            self._pending.append((cm, grads))

    def wait(self) -> None:
        missing = [i for i, n in enumerate(self._left) if n]
        self._left = [len(g) for g in self.groups]
        pending, self._pending = self._pending, []
        if missing:
            raise RuntimeError(f"parameter groups {missing} got no gradient this step: their all-reduce never ran")
        for cm, grads in pending:
            cm.wait()
            if self.op != self.dist.ReduceOp.AVG:
                self.torch._foreach_div_(grads, self.world)
