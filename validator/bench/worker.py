"""Entry of the benchmark child process: `python -m validator.bench.worker SUITE PARAMS.json OUT.json`.

Everything that touches CUDA runs here, never in the validator's own process: a hung or crashed
CUDA context then costs one child (killed on timeout), not the validator."""

from __future__ import annotations

import importlib
import sys
import time
import traceback

CHILDREN = {
    "bandwidth": "validator.bench.cuda_bandwidth",
    "gemm": "validator.bench.cuda_gemm",
    "nccl": "validator.bench.cuda_nccl",
    "train": "validator.bench.train_child",
}


def _cuda_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in CHILDREN:
        print(f"usage: python -m validator.bench.worker {{{'|'.join(CHILDREN)}}} PARAMS.json OUT.json", file=sys.stderr)
        return 2
    suite, params_path, out_path = argv
    from validator import userfile

    params = userfile.load_json(params_path, "benchmark parameters", top=dict)
    params["result_path"] = out_path
    from validator.bench.results import BenchRun

    t0 = time.perf_counter()
    try:
        if suite in ("bandwidth", "gemm") and not _cuda_ok():
            raise ImportError("no CUDA GPU visible to PyTorch")
        run = importlib.import_module(CHILDREN[suite]).run(params)
    except ImportError as e:
        run = BenchRun(suite, skipped=f"needs PyTorch with CUDA: {e}")
    except Exception as e:
        run = BenchRun(suite, errors=[f"{type(e).__name__}: {e}"])
        traceback.print_exc()
    run.seconds = round(time.perf_counter() - t0, 2)
    from validator.atomic import write_text

    write_text(out_path, run.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
