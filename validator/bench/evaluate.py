"""Figures -> check outcomes: each figure against its expectation (pass / warn / fail with margins),
clock events seen under load, and the suites' own errors. Shared by `gpu-validate bench` and the full level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from validator.bench import expect
from validator.bench.results import BenchRun, Figure
from validator.checks.base import Metric, Outcome
from validator.checks.base import fail as _fail
from validator.checks.base import ok as _ok
from validator.checks.base import skip as _skip
from validator.checks.base import warn as _warn


@dataclass(frozen=True)
class BenchCheck:
    id: str
    group: str
    title: str
    remedy: str


CHECKS = {
    "host_copy": BenchCheck("pcie.bench_host_copy", "pcie", "Host<->device copy bandwidth (PCIe)",
                            "check the negotiated PCIe link (lspci -vv LnkSta), NUMA placement and IOMMU passthrough"),
    "mem_copy": BenchCheck("gpu.bench_mem_copy", "gpu", "Device memory copy bandwidth",
                           "check clocks and throttling (nvidia-smi -q -d PERFORMANCE), ECC/row-remap state"),
    "p2p": BenchCheck("gpu.bench_p2p", "gpu", "GPU-to-GPU P2P bandwidth",
                      "check NVLink status (nvidia-smi nvlink -s), fabric manager, ACS/IOMMU settings for PCIe P2P"),
    "gemm": BenchCheck("gpu.bench_gemm", "gpu", "Sustained GEMM throughput",
                       "check power limit, cooling and clock-event reasons during load"),
    "burn": BenchCheck("gpu.bench_burn", "gpu", "GEMM burn error check (gpu-burn style)",
                       "a GPU computing different results for the same inputs is faulty: drain it and RMA"),
    "clocks": BenchCheck("gpu.bench_clocks", "gpu", "Clock events under load",
                         "thermal/HW slowdown under load: check airflow, inlet temperature, power delivery"),
    "nccl": BenchCheck("gpu.bench_nccl", "gpu", "NCCL collectives bus bandwidth",
                       "check NVLink/NVSwitch (fabric manager), NCCL_DEBUG=INFO transport choice, PCIe ACS"),
    "nccl_transport": BenchCheck("gpu.bench_nccl_transport", "gpu", "NCCL transport between ranks",
                                 "multi-node on sockets although RDMA devices exist: check the HCA ports "
                                 "(gpu-validate run --group pcie), NCCL_IB_HCA / NCCL_IB_DISABLE, nvidia_peermem"),
    "rdma": BenchCheck("pcie.bench_rdma", "pcie", "RDMA write bandwidth per HCA port (ib_write_bw)",
                       "check the port's rate and errors (pcie.ib_*), NUMA pinning, PCIe link of the HCA and GPU, "
                       "nvidia_peermem for GPUDirect, and the switch port"),
    "train": BenchCheck("gpu.bench_train", "gpu", "GPT training throughput / MFU",
                        "compare GEMM and bandwidth results first; then clocks, NCCL and the software stack"),
}


def check_key(fig: Figure) -> str:
    if fig.bench == "bandwidth":
        if fig.name.startswith(("h2d", "d2h", "bidir", "nvbw_h2d", "nvbw_d2h")):
            return "host_copy"
        if fig.name.startswith(("p2p", "nvbw_p2p")):
            return "p2p"
        return "mem_copy"
    if fig.bench == "gemm":
        return "burn" if fig.name == "burn_mismatches" else "gemm"
    return fig.bench


SUITE_KEYS = {"bandwidth": ("host_copy", "mem_copy", "p2p"), "gemm": ("gemm", "burn", "clocks"),
              "nccl": ("nccl", "nccl_transport"), "train": ("train",), "rdma": ("rdma",)}


def _fmt(v: float, unit: str) -> str:
    if unit == "fraction":
        return f"{v * 100:.1f} %"
    return f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.2f} {unit}" if abs(v) < 10 else f"{v:.1f} {unit}"


def add_mfu(run: BenchRun, catalog) -> None:
    """A `<model>_mfu` figure beside each training TFLOP/s figure, against the catalog's dense bf16 peak."""
    gpu = run.gpus[0] if run.gpus else None
    model, _ = expect.lookup(catalog, gpu)
    peak = model.peak_tflops.get("bf16") if model is not None else None
    if not peak:
        return
    for f in list(run.figures):
        if f.bench == "train" and f.name.endswith("_tflops") and not any(
                g.name == f.name[:-7] + "_mfu" for g in run.figures):
            ranks = int(f.meta.get("ranks", 1))
            m = f.value / (ranks * peak)
            run.figures.append(Figure("train", f.name[:-7] + "_mfu", m, "fraction", f.gpu,
                                      detail=f"{f.value:.0f} TFLOP/s / ({ranks} x {peak:g} dense bf16)",
                                      meta=dict(f.meta, peak_tflops=peak)))


def figure_outcome(fig: Figure, run: BenchRun, catalog, topo=None) -> Outcome:
    gpus = {g.index: g for g in run.gpus}
    gpu = gpus.get(fig.gpu if fig.gpu is not None else 0)
    model, base = expect.lookup(catalog, gpu)
    exp = expect.expected_for(fig, gpu, model, base, topo)
    where = f"GPU{fig.gpu}" if fig.gpu is not None else "node"
    subject = f"{where} {fig.name}"
    observed = _fmt(fig.value, fig.unit) + (f" ({fig.detail})" if fig.detail else "")
    if exp is None:
        return _ok(observed, "informational", subject=subject)
    pct = f" = {fig.value / exp.value * 100:.0f} % of expected" if exp.value else ""
    metric = Metric(fig.name, round(fig.value, 4), exp.value, fig.unit, exp.higher_is_better)
    expected = f">= {exp.warn_below * 100:.0f} % of {_fmt(exp.value, fig.unit)} ({exp.source})" \
        if exp.higher_is_better else f"<= {_fmt(exp.value, fig.unit)} ({exp.source})"
    status = expect.status_of(fig.value, exp)
    observed += pct
    # A link trained below what the GPU and slot can do explains a low host copy: say so.
    if check_key(fig) == "host_copy" and gpu is not None and gpu.pcie_gen and gpu.pcie_gen_max \
            and (gpu.pcie_gen < gpu.pcie_gen_max or (gpu.pcie_width_max and gpu.pcie_width < gpu.pcie_width_max)):
        observed += f"; link Gen{gpu.pcie_gen} x{gpu.pcie_width} below max Gen{gpu.pcie_gen_max} x{gpu.pcie_width_max}"
        status = "warn" if status == "pass" else status
    spec = CHECKS[check_key(fig)]
    if status == "pass":
        return _ok(observed, expected, subject=subject, metric=metric)
    if status == "warn":
        return _warn(observed, expected, spec.remedy, subject=subject, metric=metric)
    return _fail(observed, expected, spec.remedy, subject=subject, metric=metric)


def clock_outcomes(run: BenchRun) -> List[Outcome]:
    """Clock-event reasons seen during the GEMM load, named; SW power cap alone is normal at full load."""
    out = []
    for gpu, s in sorted(run.telemetry.items()):
        reasons = s.get("throttle_reasons") or []
        obs = (f"max {s.get('temp_max_c')} C, power mean {s.get('power_mean_w')} W max {s.get('power_max_w')} W, "
               f"SM clock min {s.get('sm_mhz_min')} median {s.get('sm_mhz_median')} MHz, "
               f"events: {', '.join(s.get('reasons_seen') or []) or 'none'}")
        hard = [r for r in reasons if r != "SW power cap"]
        subject = f"GPU{gpu}"
        if hard:
            out.append(_warn(obs, "no thermal / HW slowdown / power brake under load", CHECKS["clocks"].remedy,
                             subject=subject))
        else:
            out.append(_ok(obs, "no thermal / HW slowdown / power brake under load", subject=subject))
    return out


def transport_outcome(run: BenchRun) -> Optional[Outcome]:
    """Which transport NCCL chose, from its INFO log; sockets between nodes that have RDMA devices: warn."""
    t = run.info.get("transport")
    if not t or run.info.get("backend") != "nccl":
        return None
    if not t.get("log_read"):
        return _skip("NCCL's INFO log was not read (NCCL_DEBUG_FILE set in the environment?)")
    nodes, via = int(t.get("nodes") or 1), t.get("transports") or {}
    names = ", ".join(f"{k} (ranks {', '.join(map(str, v))})" for k, v in via.items()) or "none logged"
    obs = f"{nodes} node(s), {run.info.get('ranks')} ranks; via {names}; network plugin {', '.join(t.get('network') or []) or '?'}"
    spec = CHECKS["nccl_transport"]
    if nodes > 1:
        socket_hosts_with_ib = sorted({h for h, devs in (t.get("ib_devices") or {}).items() if devs}) \
            if "NET/Socket" in via else []
        if socket_hosts_with_ib:
            devs = "; ".join(f"{h}: {' '.join(t['ib_devices'][h])}" for h in socket_hosts_with_ib)
            return _warn(obs + f"; RDMA devices present ({devs})", "NET/IB between nodes that have HCAs",
                         spec.remedy)
        return _ok(obs, "NET/IB where HCAs exist, else NET/Socket")
    net_inside = [k for k in via if k.startswith("NET/")]
    if net_inside and int(run.info.get("ranks") or 1) > 1:
        return _warn(obs, "P2P or SHM between GPUs of one node",
                     "ranks of one node talk through the network: NCCL_P2P_DISABLE / NCCL_SHM_DISABLE set, "
                     "or no P2P path (ACS, IOMMU, containers without IPC)")
    return _ok(obs, "P2P or SHM between GPUs of one node")


def outcomes(run: BenchRun, catalog, topo=None) -> Dict[str, List[Outcome]]:
    """Check key -> outcomes for one suite run; a skipped or failed suite yields one outcome per key."""
    res: Dict[str, List[Outcome]] = {k: [] for k in SUITE_KEYS.get(run.suite, ())}
    if run.suite == "train":
        add_mfu(run, catalog)
    for fig in run.figures:
        res.setdefault(check_key(fig), []).append(figure_outcome(fig, run, catalog, topo))
    if run.suite == "gemm":
        res["clocks"] = clock_outcomes(run) or [_skip("no NVML samples (pynvml missing or NVML not usable)")]
    for err in run.errors:
        keys = [k for k in res if not res[k] and k != "nccl_transport"] or list(res)[:1]
        for k in keys[:1]:
            res[k].append(_fail(err, "the benchmark runs without errors", CHECKS[k].remedy, subject="error"))
    if run.suite == "nccl":
        t = transport_outcome(run)
        if t is not None:
            res["nccl_transport"].append(t)
        elif run.info.get("backend") == "gloo":
            res["nccl_transport"].append(_skip("gloo backend: no NCCL transport"))
    for k in res:
        if not res[k]:
            if k == "p2p" and len(run.gpus) == 1 and not run.skipped:
                res[k].append(_skip("one GPU: no pair for a P2P copy"))
            else:
                res[k].append(_skip(run.skipped or "no figure measured"))
    return res


def to_results(run: BenchRun, catalog, topo=None, duration_ms: float = 0.0) -> list:
    """CheckResults (validator.checks.base) at level full, for the report writers."""
    from validator.checks.base import CheckResult

    out = []
    for key, outs in outcomes(run, catalog, topo).items():
        spec = CHECKS[key]
        for o in outs:
            out.append(CheckResult(id=spec.id, group=spec.group, level="full", status=o.status, title=spec.title,
                                   observed=o.observed, expected=o.expected, remedy=o.remedy or "",
                                   subject=o.subject, metric=o.metric, duration_ms=duration_ms))
    return out
