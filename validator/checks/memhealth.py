"""gpu group: the memory health flags of Hopper and later (SRAM error threshold, unrepairable memory, channel and
TPC repair pending), each with NVIDIA's remedy: RMA for what cannot be repaired, a GPU reset for a pending repair."""

from __future__ import annotations

from validator.checks.base import check, fail, ok, skip
from validator.checks.context import Context, gpu_label

# field -> (words in the report, remedy); NVIDIA GPU memory error management: a flag that says the hardware
# cannot heal itself is an RMA, a pending repair is applied at the next GPU reset.
FLAGS = (
    ("sram_threshold_exceeded", "SRAM uncorrectable errors above threshold",
     "SRAM error threshold exceeded: drain the node and RMA the GPU"),
    ("unrepairable_memory", "unrepairable memory",
     "memory the GPU can no longer repair: drain the node and RMA the GPU"),
    ("channel_repair_pending", "channel repair pending",
     "a memory channel repair waits for a reset: drain, `nvidia-smi -r` (or reboot), then re-validate"),
    ("tpc_repair_pending", "TPC repair pending",
     "a TPC repair waits for a reset: drain, `nvidia-smi -r` (or reboot), then re-validate"),
)


@check("gpu.memory_health", "gpu", "quick", "Memory health flags (SRAM threshold, unrepairable, repair pending)")
def memory_health(ctx: Context):
    gpus = ctx.gpus
    if not gpus:
        return skip("no GPU reported by the driver")
    out = []
    expected = "no flag set: " + ", ".join(words for _, words, _ in FLAGS)
    for g in gpus:
        subject = gpu_label(g)
        values = [(words, remedy, getattr(g, field)) for field, words, remedy in FLAGS]
        known = [(w, r, v) for w, r, v in values if v is not None]
        if not known:
            out.append(skip("memory health flags not reported by this driver/GPU (Hopper and later, recent drivers)",
                            subject=subject))
            continue
        raised = [(w, r) for w, r, v in known if v]
        missing = [w for w, _, v in values if v is None]
        note = f" ({', '.join(missing)}: not reported)" if missing else ""
        if raised:
            out.append(fail("; ".join(w for w, _ in raised) + note, expected, "; ".join(r for _, r in raised),
                            subject=subject))
        else:
            out.append(ok(f"none of {len(known)} flags set" + note, expected, subject=subject))
    return out
