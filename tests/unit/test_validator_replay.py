"""Replay the validator on the real H100/H200 captures: every check's status and reason; fault variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validator_helpers import FAULTS, GPU0, XID79, statuses, tune, write
from validator.checks.base import GROUPS, REGISTRY
from validator.runner import validate
from validator.tuning import load_profile

# What a KVM guest with one H100 and an untuned OS must give, check by check, with the reason.
H100_EXPECTED = {
    ("cpu.freq_driver", ""): ("skip", "no cpufreq driver: a VM guest"),
    ("cpu.governor", ""): ("skip", "no cpufreq driver: a VM guest"),
    ("cpu.turbo", ""): ("skip", "no cpufreq driver: a VM guest"),
    ("cpu.cstates", ""): ("skip", "no cpuidle driver"),
    ("cpu.smt", ""): ("pass", "off"),
    ("numa.nodes", ""): ("pass", "1 node(s): node0 cpus 0-15"),
    ("numa.gpu_affinity", "0000:00:06.0"): ("pass", "single NUMA node"),
    ("numa.balancing", ""): ("pass", "kernel.numa_balancing = 0"),
    ("iommu.enabled", ""): ("skip", "no IOMMU groups: a VM guest"),
    ("iommu.groups", ""): ("skip", "no IOMMU groups"),
    ("iommu.passthrough", ""): ("skip", "no IOMMU groups"),
    ("iommu.cmdline", ""): ("warn", "missing: intel_iommu=on iommu=pt"),
    ("pcie.link", "0000:00:06.0"): ("pass", "Gen5 x16"),
    ("pcie.aer", "0000:00:06.0"): ("skip", "AER counters not exposed"),
    ("pcie.replay", "0000:00:06.0"): ("pass", "0 replays"),
    ("pcie.acs", ""): ("skip", "not captured"),
    ("pcie.ib_ports", ""): ("skip", "no InfiniBand/RoCE HCA"),
    ("pcie.ib_errors", ""): ("skip", "no InfiniBand/RoCE HCA"),
    ("pcie.ib_affinity", ""): ("skip", "no InfiniBand/RoCE HCA"),
    ("pcie.ib_gpudirect", ""): ("skip", "not expected: no HCA port up"),
    ("gpu.driver_loaded", ""): ("pass", "580.159.04 (open kernel module)"),
    ("gpu.count", ""): ("pass", "1 on PCI, 1 seen by the driver"),
    ("gpu.model", ""): ("pass", "1x H100 SXM5 80GB"),
    ("gpu.driver_version", ""): ("pass", "driver 580.159.04 (branch 580, open modules): open: branch 580 is within"),
    ("gpu.cuda_version", ""): ("pass", "toolkit CUDA 13.0"),
    ("gpu.persistence", GPU0): ("pass", "enabled"),
    ("gpu.ecc_mode", GPU0): ("pass", "on"),
    # facts.md: lifetime DBE 25 with one row remapped, nothing pending = healthy
    ("gpu.ecc_errors", GPU0): ("pass", "aggregate DBE 25; handled: 1 uncorrectable row(s) remapped"),
    ("gpu.retired_pages", GPU0): ("skip", "uses row remapping"),
    ("gpu.row_remap", GPU0): ("pass", "uncorrectable 1; pending no, failure no"),
    ("gpu.xid", ""): ("skip", "kernel log not readable"),
    ("gpu.temperature", GPU0): ("pass", "31 C (56 C below the slowdown limit)"),
    ("gpu.power_limit", GPU0): ("pass", "700 W"),
    ("gpu.clock_events", GPU0): ("pass", "gpu_idle"),
    ("gpu.nouveau", ""): ("pass", "nouveau not loaded"),
    ("gpu.nvlink_links", ""): ("skip", "one GPU and no active NVLink"),
    ("gpu.nvlink_errors", ""): ("skip", "nvidia-smi-nvlink-e.txt not captured"),
    ("gpu.nvlink_topology", ""): ("skip", "fewer than 2 GPUs"),
    ("gpu.nvlink_fabric", ""): ("skip", "not an NVSwitch system"),
    ("gpu.memory_health", GPU0): ("pass", "none of 4 flags set"),
    ("memory.thp", ""): ("pass", "madvise"),
    ("memory.swappiness", ""): ("warn", "vm.swappiness = 60"),
    ("memory.dirty", ""): ("warn", "vm.dirty_ratio = 20"),
    ("memory.hugepages", ""): ("pass", "0 x 2048 kB"),
    ("memory.swap", ""): ("pass", "off"),
    ("kernel.cmdline", ""): ("warn", "missing: pcie_aspm=off processor.max_cstate=1 intel_idle.max_cstate=1"),
    ("kernel.sysctl", ""): ("pass", "vm.zone_reclaim_mode = 0"),
    ("kernel.modules", ""): ("pass", "loaded: nvidia nvidia_uvm"),
    ("container.runtime", ""): ("skip", "no container runtime installed"),
    ("container.nvidia_runtime", ""): ("skip", "no container runtime installed"),
    ("container.driver_container", ""): ("skip", "no driver container on this node"),
}


def test_h100_capture_every_check(h100_node):
    rep = validate(root=h100_node, level="quick")
    got = {(r.id, r.subject): r for r in rep.results}
    assert set(got) == set(H100_EXPECTED), set(got) ^ set(H100_EXPECTED)
    for key, (status, reason) in H100_EXPECTED.items():
        r = got[key]
        assert (r.status, reason in r.observed) == (status, True), f"{key}: {r.status} {r.observed!r}"
    assert rep.exit_code == 3 and rep.status == "warn"
    assert {r.group for r in rep.results} == set(GROUPS)
    assert rep.driver_version == "580.159.04" and rep.cuda_version == "13.0" and not rep.live
    assert rep.gpus[0]["name"] == "NVIDIA H100 80GB HBM3"


def test_h100_capture_with_expected_inventory(h100_node):
    assert statuses(h100_node, expect="1xH100")[("gpu.model", "")] == "pass"
    st = statuses(h100_node, expect="8xH100")
    assert st[("gpu.count", "")] == "fail" and st[("gpu.model", "")] == "fail"
    assert statuses(h100_node, expect="1xH200")[("gpu.model", "")] == "fail"
    assert statuses(h100_node, expect="1xH100 SXM5 80GB")[("gpu.model", "")] == "pass"


def test_tuned_copy_is_clean(h100_copy):
    tune(h100_copy)
    rep = validate(root=h100_copy)
    bad = [(r.id, r.subject, r.observed) for r in rep.results if r.status in ("warn", "fail")]
    assert bad == []
    got = {r.id: r for r in rep.results}
    assert got["cpu.governor"].status == "pass" and got["cpu.turbo"].status == "pass"
    assert got["gpu.xid"].status == "pass" and rep.exit_code == 0


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_caught_by_its_check_only(h100_copy, fault):
    tune(h100_copy)
    base = statuses(h100_copy)
    edit, key, want = FAULTS[fault]
    edit(h100_copy)
    after = statuses(h100_copy)
    assert set(after) == set(base)
    changed = {k: (base[k], after[k]) for k in base if base[k] != after[k]}
    assert changed == {key: (base[key], want)}, changed


@pytest.mark.parametrize("fault", ["persistence_off", "swappiness_60", "cmdline_no_iommu_pt", "governor_powersave"])
def test_strict_profile_turns_setting_faults_red(h100_copy, tmp_path, fault):
    tune(h100_copy)
    from validator.tuning import PACKAGED_DIR
    strict = tmp_path / "strict.yaml"
    strict.write_text((PACKAGED_DIR / "gpu-performance.yaml").read_text().replace("enforce: warn", "enforce: fail"))
    edit, key, _ = FAULTS[fault]
    edit(h100_copy)
    st = statuses(h100_copy, profile=load_profile(strict))
    assert st[key] == "fail"
    assert [k for k, v in st.items() if v == "fail"] == [key]


def test_xid_warn_set_and_application_xids(h100_copy):
    tune(h100_copy)
    write(h100_copy, "cmd/dmesg.txt", XID79.replace(": 79,", ": 94,"))
    assert statuses(h100_copy)[("gpu.xid", "")] == "warn"
    write(h100_copy, "cmd/dmesg.txt", XID79.replace(": 79,", ": 13,"))
    assert statuses(h100_copy)[("gpu.xid", "")] == "pass"


def test_node_profile_copy_wins_over_packaged(h100_copy):
    write(h100_copy, "etc/gpuforge/tuning.yaml", "name: site\nsysctl:\n  vm.swappiness: 60\n")
    rep = validate(root=h100_copy)
    assert rep.profile == "site"
    assert {r.id: r.status for r in rep.results}["memory.swappiness"] == "pass"


def test_missing_nvidia_smi_is_tool_missing_not_no_gpu(h100_copy):
    write(h100_copy, "cmd/nvidia-smi-q.xml", "timeout: failed to run command 'nvidia-smi': No such file or directory\n")
    write(h100_copy, "cmd/nvidia-smi-q.xml.rc", "rc=127\n")
    rep = validate(root=h100_copy)
    got = {(r.id, r.subject): r for r in rep.results}
    assert got[("gpu.count", "")].status == "pass"  # the PCI view still shows the GPU
    assert "tool missing: nvidia-smi" in got[("gpu.count", "")].observed
    assert got[("gpu.persistence", "")].status == "skip"
    assert "tool missing: nvidia-smi" in got[("gpu.persistence", "")].observed
    assert "no GPU" not in got[("gpu.persistence", "")].observed


def test_garbage_nvidia_smi_output_is_a_failed_reading_not_crash(h100_copy):
    # the GPU is on the PCI bus, so a driver that prints half a report is a broken node (fail), not "unknown"
    write(h100_copy, "cmd/nvidia-smi-q.xml", "<nvidia_smi_log><gpu id='zz'><persistence_mode>")
    rep = validate(root=h100_copy)
    assert not [r for r in rep.results if "check crashed" in r.observed]
    assert {(r.id, r.subject): r.status for r in rep.results}[("gpu.ecc_errors", "")] == "fail"


def test_driver_not_loaded_fails(h100_copy):
    import shutil
    shutil.rmtree(h100_copy / "proc/driver/nvidia")
    assert statuses(h100_copy)[("gpu.driver_loaded", "")] == "fail"


def test_nouveau_and_missing_uvm(h100_copy):
    write(h100_copy, "proc/modules", "nouveau 1 0 - Live 0x0\nnvidia 1 0 - Live 0x0\n")
    st = statuses(h100_copy)
    assert st[("gpu.nouveau", "")] == "fail" and st[("kernel.modules", "")] == "warn"


def test_crashing_check_does_not_stop_the_rest(h100_node):
    from validator.checks.base import check

    @check("kernel.zz_crash", "kernel", "quick", "crashes on purpose")
    def _boom(ctx):
        raise RuntimeError("boom")
    try:
        rep = validate(root=h100_node)
    finally:
        REGISTRY[:] = [s for s in REGISTRY if s.id != "kernel.zz_crash"]
    got = {r.id: r for r in rep.results}
    assert got["kernel.zz_crash"].status == "fail" and "check crashed: RuntimeError: boom" in got["kernel.zz_crash"].observed
    assert got["container.nvidia_runtime"].status == "skip"  # registered after it, still ran
    assert len(rep.results) == len(H100_EXPECTED) + 1


def test_standard_level_on_snapshot_skips_live_only_checks(h100_node):
    rep = validate(root=h100_node, level="standard")
    got = {r.id: r for r in rep.results}
    for cid in ("gpu.cuda_functional", "gpu.memory_bandwidth"):
        assert got[cid].status == "skip" and "not a live node" in got[cid].observed
    assert got["gpu.dcgm_diag"].status == "skip" and "dcgmi not installed" in got["gpu.dcgm_diag"].observed
    assert got["container.gpu_run"].status == "skip"


@pytest.mark.parametrize("bw,status", [(2900.0, "pass"), (1500.0, "fail")])
def test_standard_level_replays_cuda_probe(h100_copy, bw, status):
    probe = {"backend": "torch 2.11", "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "ok": True,
                                                   "error": None, "d2d_gbs": bw}], "errors": []}
    write(h100_copy, "cmd/cuda-probe.json", json.dumps(probe) + "\n")
    rep = validate(root=h100_copy, level="standard")
    got = {r.id: r for r in rep.results}
    assert got["gpu.cuda_functional"].status == "pass"
    mb = got["gpu.memory_bandwidth"]
    assert mb.status == status and mb.metric.expected == 2921 and mb.metric.value == bw


def test_cuda_child_crash_is_a_fail(h100_copy):
    write(h100_copy, "cmd/cuda-probe.json", "Segmentation fault\n")
    write(h100_copy, "cmd/cuda-probe.json.rc", "rc=139\n")
    got = {r.id: r for r in validate(root=h100_copy, level="standard").results}
    assert got["gpu.cuda_functional"].status == "fail" and "crashed" in got["gpu.cuda_functional"].observed
    assert got["gpu.memory_bandwidth"].status == "skip"


def test_full_level_without_bench_hook_says_so(h100_node, monkeypatch):
    from validator.checks import base
    monkeypatch.setattr(base, "FULL_LEVEL_MODULES", ["validator.no_such_bench_module"])
    monkeypatch.setattr(base, "REGISTRY", [s for s in base.REGISTRY if s.level != "full"])
    monkeypatch.setattr(base, "PROVIDERS", [])
    got = {r.id: r for r in validate(root=h100_node, level="full").results}
    assert got["gpu.bench_suite"].status == "skip" and "not installed" in got["gpu.bench_suite"].observed


def test_full_level_broken_hook_is_reported(h100_node, monkeypatch, tmp_path):
    from validator.checks import base
    (tmp_path / "gpuforge_broken_hook_for_test.py").write_text("raise RuntimeError('broken hook')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "FULL_LEVEL_MODULES", ["gpuforge_broken_hook_for_test"])
    got = {r.id: r for r in validate(root=h100_node, level="full").results}
    assert got["gpu.bench_suite"].status == "fail" and "broken hook" in got["gpu.bench_suite"].observed
    assert got["gpu.count"].status == "pass"  # built-in checks still ran


def test_full_level_runs_provider_checks(h100_node, monkeypatch):
    from validator.checks import base
    from validator.checks.base import CheckSpec, ok
    monkeypatch.setattr(base, "FULL_LEVEL_MODULES", [])
    spec = CheckSpec("gpu.bench_fake", "gpu", "full", "fake bench", lambda ctx: ok("42 GB/s"))
    monkeypatch.setattr(base, "PROVIDERS", [lambda: [spec]])
    full = {r.id: r for r in validate(root=h100_node, level="full").results}
    assert full["gpu.bench_fake"].status == "pass" and "gpu.bench_suite" not in full
    quick = {r.id for r in validate(root=h100_node, level="quick").results}
    assert "gpu.bench_fake" not in quick


def test_full_level_on_snapshot_with_bench_hook(h100_node):
    rep = validate(root=h100_node, level="full")
    full = [r for r in rep.results if r.level == "full"]
    assert full and all(r.status == "skip" for r in full)  # benchmarks need a live node
    assert not [r for r in rep.results if "check crashed" in r.observed]


def test_h200x2_capture():
    H200X2_NODE = Path(__file__).parents[1] / "fixtures/nodes/h200x2-nvlink-kvm-guest"
    rep = validate(root=H200X2_NODE, expect="2xH200")
    got = {(r.id, r.subject): r for r in rep.results}
    assert got[("gpu.count", "")].status == "pass" and "2 on PCI, 2 seen by the driver" in got[("gpu.count", "")].observed
    assert got[("gpu.model", "")].status == "pass"
    links = [r for r in rep.results if r.id == "pcie.link"]
    assert [r.subject for r in links] == ["0000:00:06.0", "0000:00:07.0"]
    assert all(r.status == "pass" for r in links)
    per_gpu = [r for r in rep.results if r.id == "gpu.ecc_errors"]
    assert [r.subject for r in per_gpu] == ["GPU0 0000:00:06.0", "GPU1 0000:00:07.0"]
    assert not [r for r in rep.results if r.status == "fail"]


def test_empty_root_gives_reasons_not_crashes(tmp_path):
    rep = validate(root=tmp_path, level="standard")
    assert not [r for r in rep.results if "check crashed" in r.observed]
    assert all(r.observed for r in rep.results if r.status == "skip")  # every skip says why
    got = {r.id: r for r in rep.results}
    # An empty folder shows neither a PCI tree nor a driver: unknown, not "no GPU".
    assert got["gpu.count"].status == "skip" and "neither PCI nor driver view readable" in got["gpu.count"].observed


def test_gpu_less_node_warns_and_fails_when_gpus_are_expected(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "modules").write_text("ext4 1 0 - Live 0x0\n")
    (tmp_path / "sys" / "bus" / "pci" / "devices").mkdir(parents=True)
    free_rep = validate(root=tmp_path, level="quick")
    free = {r.id: r for r in free_rep.results}
    # A GPU validator never reads PASS for a node without GPUs: warn without an inventory, fail with one.
    assert free["gpu.count"].status == "warn" and "no NVIDIA GPU (0 on PCI" in free["gpu.count"].observed
    assert free["kernel.modules"].status == "skip" and free_rep.group_status()["gpu"] == "warn"
    assert free_rep.exit_code == 3
    need = {r.id: r for r in validate(root=tmp_path, level="quick", expect="1xH100").results}
    assert need["gpu.count"].status == "fail" and need["kernel.modules"].status == "fail"
