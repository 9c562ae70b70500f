"""Benchmark formulas checked by hand: nccl-tests bus factors, PCIe, Megatron model FLOPs, MFU."""

import pytest

from validator.bench import formulas as f
from validator.bench.gpt import CONFIGS


@pytest.mark.parametrize("op,n,factor", [
    ("all_reduce", 8, 1.75), ("all_reduce", 2, 1.0), ("all_reduce", 1, 0.0),
    ("all_gather", 8, 0.875), ("reduce_scatter", 4, 0.75), ("alltoall", 2, 0.5),
    ("broadcast", 8, 1.0), ("reduce", 8, 1.0),
])
def test_bus_factors_follow_nccl_tests(op, n, factor):
    assert f.bus_factor(op, n) == pytest.approx(factor)


def test_busbw_from_size_and_time():
    # 8 GiB all-reduce in 50 ms on 8 ranks: algbw 171.8 GB/s, busbw x 1.75.
    size = 8 << 30
    assert f.algbw_gbs(size, 0.05) == pytest.approx(171.798691, rel=1e-6)
    assert f.busbw_gbs("all_reduce", size, 0.05, 8) == pytest.approx(171.798691 * 1.75, rel=1e-6)


def test_unknown_collective_and_bad_ranks():
    with pytest.raises(ValueError, match="unknown collective"):
        f.bus_factor("allreduce", 8)
    with pytest.raises(ValueError):
        f.bus_factor("all_reduce", 0)


def test_pcie_per_direction_and_expected_copy():
    assert f.pcie_gbs(5, 16) == pytest.approx(63.0)
    assert f.pcie_gbs(4, 16) == pytest.approx(31.5)
    assert f.pcie_gbs(3, 16) == pytest.approx(15.75)
    assert f.pcie_gbs(4, 8) == pytest.approx(15.75)
    # 63.0 x 0.87 = 54.8: the H100 fixture measured 55.0 H2D on Gen5 x16.
    assert f.expected_host_copy_gbs(5, 16) == pytest.approx(54.81)


def test_model_flops_tiny_shape_by_hand():
    # B=1 s=6 l=1 h=1 V=12: 72*6*(1 + 6/6 + 12/12) = 1296.
    assert f.gpt_model_flops(1, 6, 1, 1, 12) == pytest.approx(1296)


def test_model_flops_gpt_1_2b_by_hand():
    # 72 * 16 * 1024 * 40 * 1536^2 = 1.1132e14; (1 + 1024/9216 + 51200/737280) = 1.180556
    got = f.gpt_model_flops(16, 1024, 40, 1536, 51200)
    assert got == pytest.approx(72 * 16 * 1024 * 40 * 1536 ** 2 * (1 + 1 / 9 + 51200 / 737280))
    assert got == pytest.approx(1.3142e14, rel=1e-3)
    # A 287 ms step then runs at 458 TFLOP/s: 46 % of the H100's 989 dense bf16.
    assert f.mfu(got / 0.2873 / 1e12, 1, 989) == pytest.approx(0.4625, abs=1e-3)


def test_mfu_counts_every_gpu():
    assert f.mfu(1424.0, 8, 989) == pytest.approx(0.18, abs=1e-3)
    with pytest.raises(ValueError):
        f.mfu(1.0, 0, 989)


@pytest.mark.parametrize("name,billions", [("gpt-1.2b", 1.2), ("gpt-8.3b", 8.3), ("gpt-175b", 175)])
def test_named_configs_have_their_size(name, billions):
    assert CONFIGS[name].params / 1e9 == pytest.approx(billions, rel=0.02)


def test_sizes():
    assert f.parse_size("8G") == 8 << 30
    assert f.parse_size("64M") == 64 << 20
    assert f.parse_size("1GiB") == 1 << 30
    assert f.parse_size("4096") == 4096
    with pytest.raises(ValueError, match="not a size"):
        f.parse_size("big")
    assert f.size_sweep(1 << 20, 64 << 20, 4) == [1 << 20, 4 << 20, 16 << 20, 64 << 20]
    assert f.size_sweep(1 << 20, 8 << 20, 4) == [1 << 20, 4 << 20, 8 << 20]
    assert f.human_bytes(8 << 30) == "8 GiB" and f.human_bytes(1000) == "1000 B"


def test_median():
    assert f.median([3, 1, 2]) == 2
    assert f.median([4, 1, 2, 3]) == 2.5
