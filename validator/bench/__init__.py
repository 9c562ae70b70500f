"""GPU benchmarks: bandwidth, GEMM burn, NCCL collectives, GPT training; CUDA work runs in child processes."""
