"""What the HTML report shows beyond the result tables, from a Report alone: the problems list (failures first),
a per-GPU table, the NCCL busbw vs message size curve, temperature / power / SM clock over the burn, the P2P
matrix. Each returns plain data (or SVG markup) and is empty when the report holds nothing to draw."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

from validator.checks.base import worst
from validator.report.charts import Series, human_bytes, line_chart, round_num
from validator.report.model import Report


def anchors(report: Report) -> Dict[int, str]:
    """id(result) -> the HTML id of its table row, for the jump list."""
    return {id(r): f"r{i}" for i, r in enumerate(report.results)}


def problems(report: Report) -> List:
    """Failures first, then warnings, each in report order."""
    return [r for st in ("fail", "warn") for r in report.results if r.status == st]


def _list(v) -> list:
    """v when it is a list, else []: a saved report's data section is free-form JSON and may hold anything."""
    return v if isinstance(v, list) else []


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _runs(report: Report, suite: str) -> List[dict]:
    bench = report.data.get("bench") if isinstance(report.data, dict) else None
    runs = bench.get("benchmarks") if isinstance(bench, dict) else None
    return [r for r in _list(runs) if isinstance(r, dict) and r.get("suite") == suite]


def _bus_status(report: Report, bus_id: Optional[str]) -> str:
    """Worst status of the results about this GPU (subject names its bus id)."""
    if not bus_id:
        return "skip"
    return worst(r.status for r in report.results if bus_id in (r.subject or ""))


def gpu_rows(report: Report) -> List[dict]:
    """One row per GPU, display strings rounded to what matters; 'low' marks a link below its maximum."""
    rows = []
    for g in report.gpus:
        def num(key):
            v = g.get(key)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        temp, head = num("temp_c"), num("temp_headroom_c")
        draw, limit = num("power_draw_w"), num("power_limit_w")
        sm, sm_max = num("sm_clock_mhz"), num("sm_clock_max_mhz")
        gen, gen_max, width, width_max = num("pcie_gen"), num("pcie_gen_max"), num("pcie_width"), num("pcie_width_max")
        ecc = g.get("ecc_enabled")
        dbe_v, dbe_a = num("dbe_volatile"), num("dbe_aggregate")
        ecc_text = "–" if ecc is None else ("on" if ecc else "off")
        if ecc and dbe_v is not None:
            ecc_text += f", DBE {dbe_v:.0f}" + (f" (lifetime {dbe_a:.0f})" if dbe_a else "")
        link = f"Gen{gen:.0f} x{width:.0f}" if gen is not None and width is not None else "–"
        low = bool(gen is not None and gen_max and gen < gen_max) or bool(width is not None and width_max
                                                                           and width < width_max)
        if low and gen is not None and width is not None:
            link += f" (max Gen{gen_max or gen:.0f} x{width_max or width:.0f})"
        nv = num("nvlink_active")
        rows.append({
            "index": g.get("index"), "model": g.get("model") or g.get("name") or "?", "bus_id": g.get("bus_id") or "?",
            "temp": "–" if temp is None else f"{temp:.0f} °C" + (f" ({head:.0f} °C to slowdown)" if head else ""),
            "power": "–" if draw is None else round_num(draw, "W") + (f" / {limit:.0f} W" if limit else ""),
            "clocks": "–" if sm is None else f"{sm:.0f}" + (f" / {sm_max:.0f}" if sm_max else "") + " MHz",
            "ecc": ecc_text, "ecc_bad": bool(dbe_v) or ecc is False, "link": link, "link_low": low,
            "nvlink": "–" if nv is None else f"{nv:.0f} links", "status": _bus_status(report, g.get("bus_id")),
        })
    return rows


def nccl_chart(report: Report) -> str:
    """busbw against message size, one line per collective (and per engine), from the measured sweeps."""
    series = []
    for run in _runs(report, "nccl"):
        for f in _list(run.get("figures")):
            meta = _dict(f.get("meta")) if isinstance(f, dict) else {}
            sweep = meta.get("sweep")
            if not isinstance(sweep, list):
                continue
            pts = tuple((row[0], row[3]) for row in sweep if isinstance(row, list) and len(row) >= 4)
            ranks = meta.get("ranks")
            name = str(f.get("name")) + (f" ({ranks} ranks)" if ranks and len(series) == 0 else "")
            series.append(Series(name, pts))
    return line_chart(series, "NCCL bus bandwidth vs message size", "message size", "busbw (GB/s)", log2_x=True,
                      x_fmt=human_bytes, css_class="chart nccl")


def burn_charts(report: Report) -> List[str]:
    """Temperature, power and SM clock over the GEMM burn, one line per GPU."""
    per = {}
    for run in _runs(report, "gemm"):
        for gpu, summary in sorted(_dict(run.get("telemetry")).items()):
            s = summary.get("series") if isinstance(summary, dict) else None
            if isinstance(s, dict) and _list(s.get("t")):
                per[gpu] = s
    out = []
    for key, label, unit in (("temp_c", "GPU temperature", "°C"), ("power_w", "Power draw", "W"),
                             ("sm_mhz", "SM clock", "MHz")):
        series = [Series(f"GPU{gpu}", tuple(zip(s["t"], _list(s.get(key))))) for gpu, s in per.items()]
        svg = line_chart(series, f"{label} during the burn", "seconds", f"{label.lower()} ({unit})",
                         css_class=f"chart burn burn-{key}", width=460, height=260)
        if svg:
            out.append(svg)
    return out


_P2P = re.compile(r"^p2p_(\d+)_(\d+)$")


def p2p_matrix(report: Report) -> Optional[dict]:
    """{'gpus': [0, 1], 'cells': {(a, b): (GB/s text, share of the best 0..1, link)}} from the P2P copy figures."""
    vals = {}
    for run in _runs(report, "bandwidth"):
        for f in _list(run.get("figures")):
            m = _P2P.match(str(f.get("name", ""))) if isinstance(f, dict) else None
            if m and isinstance(f.get("value"), (int, float)):
                vals[(int(m.group(1)), int(m.group(2)))] = float(f["value"])
    if not vals:
        return None
    links = _dict(_dict(_dict(report.data.get("bench")).get("topology")).get("links"))
    gpus = sorted({i for pair in vals for i in pair})
    best = max(vals.values()) or 1.0
    cells = {}
    for a in gpus:
        for b in gpus:
            if (a, b) in vals:
                cells[f"{a}-{b}"] = {"text": round_num(vals[(a, b)]), "share": round(vals[(a, b)] / best, 3),
                                     "link": links.get(f"{a}-{b}", "")}
    return {"gpus": gpus, "cells": cells}
