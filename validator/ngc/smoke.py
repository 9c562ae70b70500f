"""`ngc test`: what runs inside an image (nvidia-smi, then a framework check per image kind) and how the outputs
become check results in the report formats `gpu-validate run` uses. The judging functions are pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from validator.checks.base import CheckResult
from validator.ngc.catalog import Release
from validator.ngc.compat import FORWARD, NATIVE, Verdict

MARK = "GPUFORGE-SMOKE "  # the framework probes print one line: MARK + JSON
NVSMI = ("nvidia-smi", "--query-gpu=index,name,driver_version", "--format=csv,noheader")

_PY_TORCH = """
import json, torch
out = {"framework": "torch", "version": torch.__version__, "cuda": torch.version.cuda,
       "available": torch.cuda.is_available(), "devices": torch.cuda.device_count()}
if out["available"]:
    x = torch.ones(1 << 20, device="cuda")
    out["compute_ok"] = float(x.sum().item()) == float(1 << 20)
print("GPUFORGE-SMOKE " + json.dumps(out))
"""
_PY_TF = """
import json, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
out = {"framework": "tensorflow", "version": tf.__version__, "available": bool(gpus), "devices": len(gpus)}
if gpus:
    with tf.device("/GPU:0"):
        out["compute_ok"] = float(tf.reduce_sum(tf.ones([1 << 20]))) == float(1 << 20)
print("GPUFORGE-SMOKE " + json.dumps(out))
"""
_PY_TRT = """
import json, tensorrt as trt
b = trt.Builder(trt.Logger(trt.Logger.ERROR))
print("GPUFORGE-SMOKE " + json.dumps({"framework": "tensorrt", "version": trt.__version__, "available": b is not None,
                                      "devices": 1 if b is not None else 0}))
"""
_PY_RAPIDS = """
import json, cudf
s = cudf.Series([1, 2, 3])
print("GPUFORGE-SMOKE " + json.dumps({"framework": "rapids", "version": cudf.__version__, "available": True,
                                      "devices": 1, "compute_ok": int(s.sum()) == 6}))
"""
# argv per smoke kind: python probes print MARK + JSON; the others are judged by exit status and output.
FRAMEWORK_ARGV = {
    "torch": ("python", "-c", _PY_TORCH),
    "tensorflow": ("python", "-c", _PY_TF),
    "tensorrt": ("python3", "-c", _PY_TRT),
    "rapids": ("python", "-c", _PY_RAPIDS),
    "tritonserver": ("printenv", "TRITON_SERVER_VERSION"),
    "cuda": ("printenv", "CUDA_VERSION"),
    "deepstream": ("deepstream-app", "--version-all"),
}


@dataclass(frozen=True)
class Step:
    rc: int
    output: str


def _result(cid: str, status: str, title: str, observed: str, expected: str = "", remedy: str = "",
            subject: str = "") -> CheckResult:
    return CheckResult(cid, "container", "standard", status, title, observed, expected, remedy, subject)


def compat_result(v: Verdict) -> CheckResult:
    status = "pass" if v.kind == NATIVE else "warn" if v.kind == FORWARD else "fail"
    unverified = "" if v.release.verified else " (release data not verified, see ngc.yaml)"
    return _result("container.ngc_compat", status, "NGC release runs on this driver", f"{v.kind} [{v.rule}]: {v.reason}{unverified}",
                   f"driver >= {v.needs}", "" if v.kind == NATIVE else f"install a driver >= {v.needs}", v.release.ref)


def nvsmi_result(step: Step, want_gpus: Optional[int], ref: str) -> CheckResult:
    """nvidia-smi inside the container lists every GPU the host has."""
    title = "Container sees the GPUs (nvidia-smi)"
    lines = [l for l in step.output.splitlines() if re.match(r"^\s*\d+\s*,", l)]
    expected = f"{want_gpus} GPU(s)" if want_gpus else "at least one GPU"
    if step.rc != 0 or not lines:
        tail = (step.output.strip().splitlines() or [""])[-1][:200]
        return _result("container.ngc_gpu_visible", "fail", title, f"nvidia-smi exit {step.rc}: {tail or 'no GPU listed'}",
                       expected, "run with the NVIDIA Container Toolkit (--gpus all) on a node with a loaded driver", ref)
    if want_gpus and len(lines) != want_gpus:
        return _result("container.ngc_gpu_visible", "fail", title, f"{len(lines)} GPU(s) visible", expected,
                       "check --gpus and the NVIDIA runtime configuration", ref)
    return _result("container.ngc_gpu_visible", "pass", title, f"{len(lines)} GPU(s): {lines[0].strip()}", expected, subject=ref)


def framework_result(kind: str, step: Step, release: Release) -> CheckResult:
    """The framework probe ran, found the GPU and computed correctly (python probes), or printed its version."""
    title = f"Framework check ({kind})"
    ref = release.ref
    tail = (step.output.strip().splitlines() or [""])[-1][:200]
    if step.rc != 0:
        return _result("container.ngc_framework", "fail", title, f"exit {step.rc}: {tail}", f"{kind} works on the GPU",
                       "read the container output above (missing module: not the image it claims to be)", ref)
    probe = parse_probe(step.output)
    if kind not in ("tritonserver", "cuda", "deepstream"):
        if probe is None:
            return _result("container.ngc_framework", "fail", title, f"no {MARK.strip()} line in the output: {tail}",
                           f"{kind} works on the GPU", subject=ref)
        if not probe.get("available") or probe.get("compute_ok") is False:
            return _result("container.ngc_framework", "fail", title, f"{kind} {probe.get('version')}: GPU available="
                           f"{probe.get('available')}, compute_ok={probe.get('compute_ok')}", f"{kind} works on the GPU",
                           "check the driver and the container runtime", ref)
        return _result("container.ngc_framework", "pass", title, f"{kind} {probe.get('version')} on {probe.get('devices')} GPU(s)",
                       f"{kind} works on the GPU", subject=ref)
    if kind == "cuda" and not step.output.strip().startswith(release.cuda):
        return _result("container.ngc_framework", "fail", title, f"CUDA_VERSION={step.output.strip() or '(unset)'}",
                       f"CUDA {release.cuda} (ngc.yaml)", "the image is not the CUDA release ngc.yaml describes", ref)
    return _result("container.ngc_framework", "pass", title, f"{kind}: {step.output.strip()[:120]}", subject=ref)


def parse_probe(output: str) -> Optional[dict]:
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            try:
                d = json.loads(line[len(MARK):])
            except ValueError:
                return None
            return d if isinstance(d, dict) else None
    return None


def results_for(verdict: Verdict, kind: str, nvsmi: Step, framework: Step, want_gpus: Optional[int]) -> Tuple[CheckResult, ...]:
    return (compat_result(verdict), nvsmi_result(nvsmi, want_gpus, verdict.release.ref),
            framework_result(kind, framework, verdict.release))


def argv_for(kind: str) -> Sequence[str]:
    return FRAMEWORK_ARGV[kind]
