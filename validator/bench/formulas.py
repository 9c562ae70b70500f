"""Pure formulas behind every benchmark figure (nccl-tests bus bandwidth, Megatron model FLOPs, PCIe)."""

from __future__ import annotations

# Per-direction bandwidth of one PCIe lane after line coding, GB/s (x16 gives 15.75 / 31.5 / 63.0 for Gen3-5).
PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 0.984375, 4: 1.96875, 5: 3.9375, 6: 7.875}
# Measured host<->device copies reach 80-87 % of the link (facts.md); an H100 Gen5 x16 gives 55.0 of 63.0.
PCIE_EFFICIENCY = 0.87
# A large device-to-device copy (read + write bytes) reaches ~87 % of the datasheet HBM bandwidth
# (H100 SXM 2921 of 3350, H200 4173 of 4800).
MEM_COPY_EFFICIENCY = 0.87
# cuBLAS on random 8192^3 inputs reaches ~75-80 % of the dense tensor peak (H100: 746 of 989 bf16).
GEMM_EFFICIENCY = 0.75

# nccl-tests (src/*.cu, getBw): busbw = algbw * factor(n).
_BUS_FACTORS = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "sendrecv": lambda n: 1.0,
}
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "alltoall")


def bus_factor(op: str, nranks: int) -> float:
    """The nccl-tests factor turning algorithm bandwidth into bus bandwidth for `op` on `nranks` ranks."""
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    try:
        return _BUS_FACTORS[op](nranks)
    except KeyError:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(sorted(_BUS_FACTORS))}") from None


def algbw_gbs(size_bytes: float, seconds: float) -> float:
    """Algorithm bandwidth as nccl-tests prints it: bytes / time, in GB/s (1e9)."""
    return size_bytes / seconds / 1e9 if seconds > 0 else 0.0


def busbw_gbs(op: str, size_bytes: float, seconds: float, nranks: int) -> float:
    return algbw_gbs(size_bytes, seconds) * bus_factor(op, nranks)


def pcie_gbs(gen: int, width: int) -> float:
    """Raw per-direction PCIe bandwidth of a link (Gen5 x16 -> 63.0 GB/s)."""
    if gen not in PCIE_LANE_GBS:
        raise ValueError(f"unknown PCIe generation {gen}")
    return PCIE_LANE_GBS[gen] * width


def expected_host_copy_gbs(gen: int, width: int) -> float:
    """What a pinned host<->device copy should reach on a link of this generation and width."""
    return pcie_gbs(gen, width) * PCIE_EFFICIENCY


def gemm_flops(m: int, n: int, k: int) -> float:
    """Floating-point operations of one (m x k) @ (k x n) product (a multiply-add counts 2)."""
    return 2.0 * m * n * k


def gpt_params(layers: int, hidden: int, vocab: int, seq: int) -> int:
    """Parameters of a GPT with tied embeddings, learned positions, biases and two LayerNorms per block."""
    per_layer = 12 * hidden * hidden + 13 * hidden
    return layers * per_layer + vocab * hidden + seq * hidden + 2 * hidden


def gpt_model_flops(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Megatron model FLOPs of one training iteration (forward + backward, no recomputation counted).

    72 B s l h^2 (1 + s/(6h) + V/(12 l h)), Narayanan et al. 2021 without the recompute pass.
    """
    return 72.0 * batch * seq * layers * hidden ** 2 * (1 + seq / (6.0 * hidden) + vocab / (12.0 * layers * hidden))


def mfu(achieved_tflops: float, n_gpus: int, peak_tflops: float) -> float:
    """Model FLOP utilisation: achieved / (GPUs x dense peak), as a fraction."""
    if n_gpus <= 0 or peak_tflops <= 0:
        raise ValueError("n_gpus and peak_tflops must be positive")
    return achieved_tflops / (n_gpus * peak_tflops)


def median(xs) -> float:
    s = sorted(xs)
    if not s:
        raise ValueError("median of nothing")
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2.0


def parse_size(text: str) -> int:
    """'8G', '64M', '1024', '1GiB' -> bytes (binary units, as nccl-tests -b/-e take them)."""
    t = str(text).strip().upper().replace("IB", "").rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])  # nan is a ValueError here, inf an OverflowError
        return int(t)
    except (ValueError, OverflowError):
        raise ValueError(f"not a size: {text!r} (use e.g. 1M, 64M, 8G)") from None


def size_sweep(min_bytes: int, max_bytes: int, factor: int = 2) -> list:
    if min_bytes <= 0 or max_bytes < min_bytes or factor < 2:
        raise ValueError("need 0 < min <= max and factor >= 2")
    out, s = [], min_bytes
    while s <= max_bytes:
        out.append(s)
        s *= factor
    if out[-1] != max_bytes:
        out.append(max_bytes)
    return out


def human_bytes(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"
