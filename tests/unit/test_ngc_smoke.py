"""`ngc test` verdicts from container outputs, the mirror mapping and the NGC key that never shows."""

from __future__ import annotations

import logging

import pytest

from validator.catalog import load_catalog
from validator.errors import UserError
from validator.ngc import smoke
from validator.ngc.catalog import load_ngc
from validator.ngc.compat import GpuFacts, NodeFacts, judge
from validator.ngc.source import Secret, key_from_env, redact, source_for

CAT = load_catalog()
NGC = load_ngc(catalog=CAT)
PT = NGC.release("pytorch", "24.01-py3")
NVSMI_2 = "0, NVIDIA H200, 580.159.04\n1, NVIDIA H200, 580.159.04\n"


H100 = GpuFacts("H100 SXM5 80GB", "9.0", True)


def verdict(driver="580.159.04"):
    return judge(PT, NodeFacts(driver, (H100,)), CAT)


def test_all_pass_on_a_healthy_node():
    probe = smoke.MARK + '{"framework": "torch", "version": "2.2.0a0", "available": true, "devices": 2, "compute_ok": true}\n'
    rs = smoke.results_for(verdict(), "torch", smoke.Step(0, NVSMI_2), smoke.Step(0, "warn: x\n" + probe), 2)
    assert [(r.id, r.status) for r in rs] == [("container.ngc_compat", "pass"), ("container.ngc_gpu_visible", "pass"),
                                             ("container.ngc_framework", "pass")]
    assert "2 GPU(s)" in rs[1].observed and "torch 2.2.0a0 on 2 GPU(s)" in rs[2].observed


def test_gpu_count_mismatch_and_missing_nvidia_smi_fail():
    r = smoke.nvsmi_result(smoke.Step(0, NVSMI_2.splitlines()[0]), 2, PT.ref)
    assert r.status == "fail" and "1 GPU(s) visible" in r.observed
    r = smoke.nvsmi_result(smoke.Step(127, 'exec: "nvidia-smi": executable file not found in $PATH'), 1, PT.ref)
    assert r.status == "fail" and "exit 127" in r.observed and "executable file not found" in r.observed


def test_framework_probe_failures():
    no_gpu = smoke.MARK + '{"framework": "torch", "version": "2.2", "available": false, "devices": 0}'
    assert smoke.framework_result("torch", smoke.Step(0, no_gpu), PT).status == "fail"
    wrong = smoke.MARK + '{"framework": "torch", "version": "2.2", "available": true, "devices": 1, "compute_ok": false}'
    r = smoke.framework_result("torch", smoke.Step(0, wrong), PT)
    assert r.status == "fail" and "compute_ok=False" in r.observed
    r = smoke.framework_result("torch", smoke.Step(1, "ModuleNotFoundError: No module named 'torch'"), PT)
    assert r.status == "fail" and "No module named 'torch'" in r.observed
    r = smoke.framework_result("torch", smoke.Step(0, "something else"), PT)
    assert r.status == "fail" and "no GPUFORGE-SMOKE line" in r.observed


def test_cuda_image_checks_its_cuda_version():
    rel = NGC.release("cuda", "12.4.1-base-ubuntu22.04")
    assert smoke.framework_result("cuda", smoke.Step(0, "12.4.1\n"), rel).status == "pass"
    assert smoke.framework_result("cuda", smoke.Step(0, "12.2.2\n"), rel).status == "fail"


def test_compat_result_levels():
    assert smoke.compat_result(verdict()).status == "pass"
    fwd = smoke.compat_result(verdict("535.261.03"))
    assert fwd.status == "warn" and "forward-compat [ngc.forward-compat]" in fwd.observed
    no = smoke.compat_result(verdict("530.30.02"))
    assert no.status == "fail" and no.remedy == "install a driver >= 545" and no.subject == "pytorch:24.01-py3"


def test_every_smoke_kind_has_a_command():
    for img in NGC.images:
        assert smoke.argv_for(img.smoke)


def test_mirror_mapping():
    s = source_for("nvidia/pytorch", "24.01-py3")
    assert (s.pull_ref, s.canonical, s.via_mirror) == ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/pytorch:24.01-py3", False)
    s = source_for("nvidia/rapidsai/base", "26.02-cuda12-py3.13", mirror="http://127.0.0.1:5000/")
    assert s.pull_ref == "127.0.0.1:5000/nvidia/rapidsai/base:26.02-cuda12-py3.13"
    assert s.canonical == "nvcr.io/nvidia/rapidsai/base:26.02-cuda12-py3.13" and s.pull_host == "127.0.0.1:5000"
    s = source_for("nvidia/pytorch", "24.01-py3", mirror="mirror.farm.example/ngc")
    assert s.pull_ref == "mirror.farm.example/ngc/nvidia/pytorch:24.01-py3"
    with pytest.raises(UserError):
        source_for("nvidia/pytorch", "x", mirror="not a host")


def test_secret_never_prints(caplog):
    key = Secret("nvapi-TOPSECRET-123")
    assert str(key) == "***" and repr(key) == "***" and f"{key}" == "***" and "%s" % key == "***"
    logging.getLogger("t").warning("key is %s / %r", key, key)
    assert "TOPSECRET" not in caplog.text
    assert redact("auth failed for nvapi-TOPSECRET-123 at x", [key, None]) == "auth failed for *** at x"
    assert key_from_env({"NGC_API_KEY": "  nvapi-1 "}).reveal() == "nvapi-1"
    assert key_from_env({}) is None and key_from_env({"NGC_API_KEY": " "}) is None
