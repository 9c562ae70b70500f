"""Parsers for nvbandwidth, nccl-tests, gpu-burn, dcgmi diag, nvidia-smi topo -m, Megatron logs."""

import pytest

from validator.bench import parsers

NVBANDWIDTH = """\
nvbandwidth Version: v0.7
Built from Git version: v0.7

NOTE: This tool reports current measured bandwidth on your system.
Additional system-specific tuning may be required to achieve maximal peak bandwidth.

CUDA Runtime Version: 12040
CUDA Driver Version: 12040
Driver Version: 550.54.15

Device 0: NVIDIA H100 80GB HBM3 (00000000:1b:00)
Device 1: NVIDIA H100 80GB HBM3 (00000000:43:00)

Running host_to_device_memcpy_ce.
memcpy CE CPU(row) -> GPU(column) bandwidth (GB/s)
           0         1
 0     55.57     55.60

SUM host_to_device_memcpy_ce 111.17

Running device_to_device_memcpy_read_ce.
memcpy CE GPU(row) <- GPU(column) bandwidth (GB/s)
           0         1
 0       N/A    391.30
 1    391.52       N/A

SUM device_to_device_memcpy_read_ce 782.82

Running device_to_device_bidirectional_memcpy_write_ce.
Waived.
"""


def test_nvbandwidth_matrices_and_sums():
    t = parsers.parse_nvbandwidth(NVBANDWIDTH)
    h2d = t["host_to_device_memcpy_ce"]
    assert h2d.matrix == {(0, 0): 55.57, (0, 1): 55.60}
    assert h2d.sum_gbs == pytest.approx(111.17)
    assert "CPU(row) -> GPU(column)" in h2d.title
    d2d = t["device_to_device_memcpy_read_ce"]
    assert d2d.matrix[(0, 0)] is None and d2d.matrix[(1, 0)] == pytest.approx(391.52)
    assert t["device_to_device_bidirectional_memcpy_write_ce"].waived


ALL_REDUCE_PERF = """\
# nThread 1 nGpus 8 minBytes 1048576 maxBytes 8589934592 step: 4(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0
#
# Using devices
#  Rank  0 Group  0 Pid  41233 on    node01 device  0 [0x18] NVIDIA H100 80GB HBM3
#  Rank  1 Group  0 Pid  41233 on    node01 device  1 [0x2a] NVIDIA H100 80GB HBM3
#
#                                                              out-of-place                       in-place          
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)       
     1048576        262144     float     sum      -1    33.12   31.66   55.40      0    32.70   32.07   56.12      0
  8589934592    2147483648     float     sum      -1    49212  174.55  305.46      0    49180  174.66  305.66      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 180.533 
#
"""

# nccl-tests before 2.12: no root column and a float "error" column.
OLD_ALL_GATHER = """\
#       size         count      type     redop     time   algbw   busbw  error     time   algbw   busbw  error
     1048576         32768     float      none    20.41   51.38   44.96  0e+00    20.17   51.99   45.49  0e+00
# Avg bus bandwidth    : 44.96
"""

ALLTOALL_NA = """\
     1048576         32768     float      none      -1    30.00   34.95   30.58      0      N/A     N/A     N/A    N/A
"""


def test_nccl_tests_current_layout():
    out = parsers.parse_nccl_tests(ALL_REDUCE_PERF)
    assert out.nranks == 2 and out.avg_busbw == pytest.approx(180.533) and out.out_of_bounds == 0
    last = out.rows[-1]
    assert (last.size, last.count, last.dtype, last.redop) == (8589934592, 2147483648, "float", "sum")
    assert (last.time_us, last.algbw, last.busbw, last.wrong) == (49212, 174.55, 305.46, 0)
    assert last.ip_busbw == pytest.approx(305.66)


def test_nccl_tests_old_layout_and_na_in_place():
    row = parsers.parse_nccl_tests(OLD_ALL_GATHER).rows[0]
    assert (row.size, row.busbw, row.wrong) == (1048576, 44.96, 0)
    row = parsers.parse_nccl_tests(ALLTOALL_NA).rows[0]
    assert row.busbw == pytest.approx(30.58) and row.ip_busbw is None


GPU_BURN = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)
Initialized device 0 with 81559 MB of memory (80735 MB available, using 72661 MB of it), using FLOATS
Results are 268435456 bytes each, thus performing 268 iterations
Burning for 60 seconds.
10.0%  proc'd: 4824 (37584 Gflop/s) - 4556 (36000 Gflop/s)   errors: 0 - 0   temps: 45 C - 46 C 
\tSummary at:   Mon Jan  1 00:00:06 UTC 2024

100.0%  proc'd: 48240 (37600 Gflop/s) - 45560 (36100 Gflop/s)   errors: 0 - 12  (WARNING!)  temps: 62 C - 64 C 

Killing processes with SIGTERM (soft kill)
done

Tested 2 GPUs:
\tGPU 0: OK
\tGPU 1: FAULTY
"""


def test_gpu_burn_progress_and_verdicts():
    out = parsers.parse_gpu_burn(GPU_BURN)
    assert out.gflops == {0: 37600.0, 1: 36100.0}
    assert out.errors == {0: 0, 1: 12}
    assert out.temps == {0: 62.0, 1: 64.0}
    assert out.verdict == {0: "OK", 1: "FAULTY"} and not out.ok


DCGMI = """\
Successfully ran diagnostic for group.
+---------------------------+------------------------------------------------+
| Diagnostic                | Result                                         |
+===========================+================================================+
|-----  Metadata  ----------+------------------------------------------------|
| DCGM Version              | 3.3.5                                          |
| Number of GPUs Detected   | 8                                              |
+-----  Deployment  --------+------------------------------------------------+
| Denylist                  | Pass                                           |
| NVML Library              | Pass                                           |
+-----  Integration  -------+------------------------------------------------+
| PCIe                      | Fail - GPU: 3                                  |
+-----  Hardware  ----------+------------------------------------------------+
| GPU Memory                | Pass - All                                     |
+---------------------------+------------------------------------------------+
"""


def test_dcgmi_diag_rows_and_failures():
    res = parsers.parse_dcgmi_diag(DCGMI)
    assert res["DCGM Version"] == "3.3.5" and res["GPU Memory"] == "Pass - All"
    assert parsers.dcgmi_failures(res) == ["PCIe: Fail - GPU: 3"]
    assert "Diagnostic" not in res


def test_topology_from_captured_nodes(h100_node):
    one = parsers.parse_topo_matrix((h100_node / "cmd/nvidia-smi-topo.txt").read_text())
    assert one.gpus == ["GPU0"] and one.links == {} and one.cpu_affinity == {0: "0-15"}
    two_path = h100_node.parent / "h200x2-nvlink-kvm-guest/cmd/nvidia-smi-topo.txt"
    two = parsers.parse_topo_matrix(two_path.read_text())
    assert two.links == {(0, 1): "NV18", (1, 0): "NV18"} and two.nvlinks(0, 1) == 18
    assert two.numa_affinity == {0: "0", 1: "0"}


def test_topology_pcie_matrix():
    text = ("\tGPU0\tGPU1\tGPU2\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
            "GPU0\t X \tPIX\tSYS\t0-31\t0\t\tN/A\n"
            "GPU1\tPIX\t X \tSYS\t0-31\t0\t\tN/A\n"
            "GPU2\tSYS\tSYS\t X \t32-63\t1\t\tN/A\n\nLegend:\n")
    t = parsers.parse_topo_matrix(text)
    assert t.links[(0, 1)] == "PIX" and t.links[(2, 0)] == "SYS" and t.nvlinks(0, 1) == 0
    assert t.cpu_affinity[2] == "32-63"


def test_megatron_log_lines():
    log = (" [2026-01-01 00:00:10] iteration       10/      30 | consumed samples:          640 | "
           "elapsed time per iteration (ms): 312.5 | throughput per GPU (TFLOP/s/GPU): 412.3 | "
           "learning rate: 1.0E-04 | global batch size:    64 | lm loss: 9.1E+00 |\n"
           " iteration        1/      30 | elapsed time per iteration (ms): 9000.1 |\n")
    rows = parsers.parse_megatron_log(log)
    assert rows == [{"iteration": 10, "ms": 312.5, "tflops_per_gpu": 412.3},
                    {"iteration": 1, "ms": 9000.1, "tflops_per_gpu": None}]
