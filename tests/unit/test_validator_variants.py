"""Bare-metal-like and tool-present variants of the H100 capture: paths a KVM guest never takes."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from validator_helpers import GPU_DIR, sub, tune, write

from validator.runner import validate

CPU = "sys/devices/system/cpu"


def _got(root, **kw):
    return {(r.id, r.subject): r for r in validate(root=root, **kw).results}


def _bare_metal(root: Path) -> None:
    """Drop the 'hypervisor' CPU flag: the validator now judges missing features as a real host's."""
    sub(root, "proc/cpuinfo", r" hypervisor", "")


def test_cstates_deep_states_enabled(h100_copy):
    write(h100_copy, f"{CPU}/cpuidle/current_driver", "intel_idle\n")
    for i, (name, dis) in enumerate([("POLL", 0), ("C1", 0), ("C1E", 0), ("C6", 0)]):
        write(h100_copy, f"{CPU}/cpu0/cpuidle/state{i}/name", name + "\n")
        write(h100_copy, f"{CPU}/cpu0/cpuidle/state{i}/disable", f"{dis}\n")
    r = _got(h100_copy)[("cpu.cstates", "")]
    assert r.status == "warn" and "C6" in r.observed and "max_cstate=1" in r.remedy
    write(h100_copy, f"{CPU}/cpu0/cpuidle/state3/disable", "1\n")
    assert _got(h100_copy)[("cpu.cstates", "")].status == "pass"


def test_bare_metal_without_cpufreq_or_iommu_warns(h100_copy):
    _bare_metal(h100_copy)
    got = _got(h100_copy)
    assert got[("cpu.freq_driver", "")].status == "warn"
    assert got[("iommu.enabled", "")].status == "warn"


def test_turbo_off_and_smt_profile(h100_copy, tmp_path):
    tune(h100_copy)
    write(h100_copy, f"{CPU}/intel_pstate/no_turbo", "1\n")
    assert _got(h100_copy)[("cpu.turbo", "")].status == "warn"
    prof = tmp_path / "p.yaml"
    prof.write_text("name: smt-on\ncpu:\n  smt: on\n")
    assert _got(h100_copy, profile=str(prof))[("cpu.smt", "")].status == "warn"


def test_aer_counters(h100_copy):
    write(h100_copy, f"{GPU_DIR}/aer_dev_fatal", "Undefined 0\nDLP 0\nTOTAL_ERR_FATAL 0\n")
    write(h100_copy, f"{GPU_DIR}/aer_dev_nonfatal", "UnsupReq 0\nTOTAL_ERR_NONFATAL 0\n")
    write(h100_copy, f"{GPU_DIR}/aer_dev_correctable", "RxErr 3\nTOTAL_ERR_COR 3\n")
    assert _got(h100_copy)[("pcie.aer", "0000:00:06.0")].status == "pass"
    write(h100_copy, f"{GPU_DIR}/aer_dev_fatal", "DLP 1\nTOTAL_ERR_FATAL 1\n")
    assert _got(h100_copy)[("pcie.aer", "0000:00:06.0")].status == "fail"


def test_speed_downshift_at_idle_is_warn_not_fail(h100_copy):
    write(h100_copy, f"{GPU_DIR}/current_link_speed", "2.5 GT/s PCIe\n")
    r = _got(h100_copy)[("pcie.link", "0000:00:06.0")]
    assert r.status == "warn" and "idle" in r.observed


def test_iommu_groups_and_passthrough(h100_copy):
    tune(h100_copy)
    groups = h100_copy / "sys/kernel/iommu_groups"
    (groups / "7/devices").mkdir(parents=True)
    write(h100_copy, "sys/kernel/iommu_groups/7/type", "identity\n")
    os.symlink("../../../kernel/iommu_groups/7", h100_copy / GPU_DIR / "iommu_group")
    got = _got(h100_copy)
    assert got[("iommu.enabled", "")].status == "pass"
    assert got[("iommu.groups", "0000:00:06.0")].status == "pass"
    assert got[("iommu.passthrough", "0000:00:06.0")].status == "pass"
    write(h100_copy, "sys/kernel/iommu_groups/7/type", "DMA-FQ\n")
    assert _got(h100_copy)[("iommu.passthrough", "0000:00:06.0")].status == "warn"


def test_acs_from_lspci(h100_copy):
    write(h100_copy, "cmd/lspci-vvv.txt", "00:01.0 PCI bridge: X\n\tACSCtl:\tSrcValid+ ReqRedir+ CmpltRedir+\n")
    assert _got(h100_copy)[("pcie.acs", "")].status == "warn"
    write(h100_copy, "cmd/lspci-vvv.txt", "00:01.0 PCI bridge: X\n\tCapabilities: <access denied>\n")
    assert _got(h100_copy)[("pcie.acs", "")].status == "skip"


def test_infiniband_needs_peermem(h100_copy):
    port = h100_copy / "sys/class/infiniband/mlx5_0/ports/1"
    port.mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    (port / "phys_state").write_text("5: LinkUp\n")
    got = _got(h100_copy)
    # The capture runs the open kernel modules on Linux 6.x: GPUDirect RDMA through DMA-BUF, no peermem needed.
    r = got[("pcie.ib_gpudirect", "")]
    assert r.status == "pass" and "DMA-BUF" in r.observed
    write(h100_copy, "proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.216.03\n")
    got = _got(h100_copy)
    r = got[("pcie.ib_gpudirect", "")]
    assert r.status == "warn" and "nvidia_peermem not loaded" in r.observed
    # One fault, one check: GPUDirect RDMA is pcie.ib_gpudirect's, not kernel.modules'.
    assert got[("kernel.modules", "")].status == "pass"


def test_container_and_dcgm_replayed(h100_copy):
    sub(h100_copy, "cmd/which.txt", r"docker: missing", "docker: /usr/bin/docker")
    sub(h100_copy, "cmd/which.txt", r"nvidia-ctk: missing", "nvidia-ctk: /usr/bin/nvidia-ctk")
    sub(h100_copy, "cmd/which.txt", r"dcgmi: missing", "dcgmi: /usr/bin/dcgmi")
    write(h100_copy, "etc/docker/daemon.json", json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}))
    write(h100_copy, "cmd/docker-images.txt", "debian:bookworm\nnvidia/cuda:12.4.1-base-ubuntu22.04\n")
    write(h100_copy, "cmd/docker-run-gpus.txt", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-357e)\n")
    diag = {"DCGM GPU Diagnostic": {"test_categories": [{"category": "Deployment", "tests": [
        {"name": "Denylist", "results": [{"status": "Pass"}]}, {"name": "NVML Library", "results": [{"status": "Pass"}]}]}]}}
    write(h100_copy, "cmd/dcgmi-diag-r1.json", json.dumps(diag))
    got = _got(h100_copy, level="standard")
    assert got[("container.runtime", "")].status == "pass"
    assert got[("container.nvidia_runtime", "")].status == "pass"
    r = got[("container.gpu_run", "")]
    assert r.status == "pass" and "nvidia/cuda:12.4.1" in r.observed
    assert got[("gpu.dcgm_diag", "")].status == "pass"
    diag["DCGM GPU Diagnostic"]["test_categories"][0]["tests"][1]["results"][0]["status"] = "Fail"
    write(h100_copy, "cmd/dcgmi-diag-r1.json", json.dumps(diag))
    write(h100_copy, "cmd/docker-run-gpus.txt", "docker: Error response from daemon: could not select device driver\n")
    write(h100_copy, "cmd/docker-run-gpus.txt.rc", "125\n")
    got = _got(h100_copy, level="standard")
    assert got[("gpu.dcgm_diag", "")].status == "fail" and "NVML Library" in got[("gpu.dcgm_diag", "")].observed
    assert got[("container.gpu_run", "")].status == "fail"


def test_driver_library_mismatch(h100_copy):
    write(h100_copy, "sys/module/nvidia/version", "575.57.08\n")
    r = _got(h100_copy)[("gpu.driver_version", "")]
    assert r.status == "fail" and "kernel module 575.57.08, user space 580.159.04" in r.observed


def test_hot_gpu_and_hw_slowdown(h100_copy):
    xml = "cmd/nvidia-smi-q.xml"
    sub(h100_copy, xml, r"<gpu_temp_tlimit>56 C<", "<gpu_temp_tlimit>3 C<")
    sub(h100_copy, xml, r"<clocks_event_reason_hw_slowdown>Not Active<", "<clocks_event_reason_hw_slowdown>Active<")
    sub(h100_copy, xml, r"<current_power_limit>700.00 W<", "<current_power_limit>400.00 W<")
    got = _got(h100_copy)
    g = "GPU0 0000:00:06.0"
    assert got[("gpu.temperature", g)].status == "warn"
    assert got[("gpu.clock_events", g)].status == "fail"
    assert got[("gpu.power_limit", g)].status == "warn"


def test_node_side_parses_as_python39():
    """The validator package must run on Python 3.9 (Debian 11/RHEL 8 era nodes): no newer syntax."""
    pkg = Path(__file__).resolve().parents[2] / "validator"
    for f in sorted(pkg.rglob("*.py")):
        ast.parse(f.read_text(), filename=str(f), feature_version=(3, 9))


def test_amd_node_ignores_intel_only_flags(h100_copy):
    sub(h100_copy, "proc/cpuinfo", r"GenuineIntel", "AuthenticAMD")
    got = _got(h100_copy)
    assert got[("iommu.cmdline", "")].observed == "missing: amd_iommu=on iommu=pt"
    assert got[("kernel.cmdline", "")].observed == "missing: pcie_aspm=off processor.max_cstate=1"


def test_docs_list_every_builtin_check():
    from validator.checks.base import REGISTRY
    doc = (Path(__file__).resolve().parents[2] / "docs/validator.md").read_text()
    builtin = [s.id for s in REGISTRY if s.func.__module__.startswith("validator.checks.")]
    assert builtin and [i for i in builtin if f"| {i} |" not in doc] == []


def _driver(root, version: str, open_modules: bool) -> None:
    kind = "Open Kernel Module" if open_modules else "Kernel Module"
    write(root, "proc/driver/nvidia/version", f"NVRM version: NVIDIA UNIX {kind} for x86_64  {version}  Release Build\n")
    write(root, "sys/module/nvidia/version", version + "\n")
    sub(root, "cmd/nvidia-smi-q.xml", r"<driver_version>[^<]*<", f"<driver_version>{version}<")


def test_driver_id_lists_decide(h100_copy):
    """facts.md: H100 (10de:2330) is in 535.261.03's nvidia.ids but not in nvidia-open.ids."""
    _driver(h100_copy, "535.261.03", open_modules=True)
    r = _got(h100_copy)[("gpu.driver_version", "")]
    assert r.status == "fail" and "nvidia-open.ids" in r.observed
    _driver(h100_copy, "535.261.03", open_modules=False)
    r = _got(h100_copy)[("gpu.driver_version", "")]
    assert r.status == "pass" and "nvidia.ids" in r.observed


def test_hung_cuda_child_is_a_fail(h100_node):
    """A CUDA child that times out (hung context) fails the GPU; the rest of the run goes on."""
    from validator.errors import CommandError
    from validator.node import Node, ReplayRunner

    replay = ReplayRunner(h100_node / "cmd")

    def runner(name, argv, timeout=None):
        if name == "cuda-probe.json":
            raise CommandError(list(argv), None, reason=f"timed out after {timeout}s")
        return replay(name, argv, timeout)

    node = Node(h100_node, runner, live=True)
    rep = validate(node=node, level="standard", use_nvml=False, cuda_timeout=7)
    got = {r.id: r for r in rep.results}
    assert got["gpu.cuda_functional"].status == "fail" and "timed out after 7" in got["gpu.cuda_functional"].observed
    assert got["gpu.memory_bandwidth"].status == "skip" and got["gpu.persistence"].status == "pass"


def test_remap_failure_and_retired_pages_thresholds(h100_copy):
    xml, g = "cmd/nvidia-smi-q.xml", "GPU0 0000:00:06.0"
    sub(h100_copy, xml, r"<remapped_row_failure>No<", "<remapped_row_failure>Yes<")
    assert _got(h100_copy)[("gpu.row_remap", g)].status == "fail"
    # a pre-Ampere style report: page retirement instead of row remapping
    sub(h100_copy, xml, r"(?s)<remapped_rows>.*</remapped_rows>", "<remapped_rows>N/A</remapped_rows>")
    sub(h100_copy, xml, r"(?s)(<double_bit_retirement>\s*<retired_count>)N/A", r"\g<1>2")
    sub(h100_copy, xml, r"(?s)(<multiple_single_bit_retirement>\s*<retired_count>)N/A", r"\g<1>10")
    got = _got(h100_copy)
    assert got[("gpu.retired_pages", g)].status == "pass" and got[("gpu.row_remap", g)].status == "skip"
    assert got[("gpu.ecc_errors", g)].status == "pass" and "2 page(s) retired" in got[("gpu.ecc_errors", g)].observed
    sub(h100_copy, xml, r"<pending_retirement>N/A<", "<pending_retirement>Yes<")
    assert _got(h100_copy)[("gpu.retired_pages", g)].status == "warn"
    sub(h100_copy, xml, r"(?s)(<multiple_single_bit_retirement>\s*<retired_count>)10", r"\g<1>61")
    assert _got(h100_copy)[("gpu.retired_pages", g)].status == "fail"  # 61 + 2 >= 63


def test_link_from_driver_when_sysfs_pci_tree_missing(h100_copy):
    import shutil
    shutil.rmtree(h100_copy / "sys/devices/pci0000:00")
    r = _got(h100_copy)[("pcie.link", "0000:00:06.0")]
    assert r.status == "pass" and "driver" in r.observed
