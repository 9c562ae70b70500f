"""`bench train --engine megatron`: Megatron-LM's pretrain_gpt.py on mock data when it is installed
(as in NVIDIA's NGC PyTorch/NeMo containers); its per-iteration log gives TFLOP/s per GPU."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from validator import subp
from validator.bench import gpt, parsers
from validator.bench.formulas import median
from validator.bench.results import BenchRun, Figure
from validator.errors import GpuforgeError

SEARCH = ("/opt/megatron-lm", "/opt/Megatron-LM", "/workspace/megatron-lm", "/workspace/Megatron-LM")


def find_pretrain(env=os.environ) -> Optional[Path]:
    for root in [env.get("MEGATRON_LM_PATH", ""), *SEARCH]:
        if root and (Path(root) / "pretrain_gpt.py").is_file():
            return Path(root) / "pretrain_gpt.py"
    return None


def argv(script: Path, cfg: gpt.GptConfig, ngpus: int, micro_batch: int, iters: int) -> List[str]:
    """torchrun + pretrain_gpt.py arguments for a data-parallel run of `cfg` on mock data."""
    launcher = [shutil.which("torchrun") or "torchrun"] if shutil.which("torchrun") else [
        sys.executable, "-m", "torch.distributed.run"]
    return [
        *launcher, f"--nproc_per_node={ngpus}", str(script),
        "--num-layers", str(cfg.layers), "--hidden-size", str(cfg.hidden),
        "--num-attention-heads", str(cfg.heads), "--seq-length", str(cfg.seq),
        "--max-position-embeddings", str(cfg.seq), "--micro-batch-size", str(micro_batch),
        "--global-batch-size", str(micro_batch * ngpus), "--train-iters", str(iters),
        "--lr", "1e-4", "--min-lr", "1e-5", "--lr-decay-style", "cosine", "--bf16",
        "--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", str(cfg.vocab),
        "--log-interval", "1", "--log-throughput", "--eval-iters", "0", "--no-save-optim",
        "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
    ]


def run(o) -> BenchRun:
    script = find_pretrain()
    if script is None:
        return BenchRun("train", skipped="Megatron-LM not found (set MEGATRON_LM_PATH or run inside an NGC "
                                         "PyTorch/NeMo container); use --engine builtin")
    cfg = gpt.get_config(o.train_model)
    from validator.bench.suite import _gpu_count

    n = len(o.gpus) or _gpu_count()
    iters = o.train_warmup + o.train_steps
    try:
        out = subp.run(argv(script, cfg, n, o.micro_batch or 8, iters), timeout=o.timeout_s,
                       cwd=str(script.parent))
    except GpuforgeError as e:
        return BenchRun("train", errors=[f"Megatron-LM: {e.message.splitlines()[0]}"])
    rows = [r for r in parsers.parse_megatron_log(out.stdout + out.stderr) if r["iteration"] > o.train_warmup]
    tf = [r["tflops_per_gpu"] for r in rows if r["tflops_per_gpu"]]
    if not tf:
        return BenchRun("train", errors=["Megatron-LM printed no throughput lines (needs --log-throughput)"])
    per_gpu = median(tf)
    meta = {"model": cfg.name, "ranks": n, "engine": "megatron", "step_ms": median([r["ms"] for r in rows])}
    return BenchRun("train", figures=[Figure("train", f"{cfg.name}_tflops", per_gpu * n, "TFLOP/s", None,
                                             detail="Megatron-LM log, median per GPU x GPUs", meta=meta)],
                    info={"engine": "megatron", "script": str(script)})
