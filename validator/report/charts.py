"""Inline SVG line charts for the HTML report (no script, no font, no network): axes with round ticks, one polyline a
series, a legend; text escaped. Pure functions from numbers to markup."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Series:
    name: str
    points: Tuple[Tuple[float, float], ...]  # (x, y); points with a None or non-finite value are dropped


def round_num(v: Optional[float], unit: str = "") -> str:
    """A figure rounded to what matters: 3 significant digits, no trailing noise ('344', '55.2', '0.048')."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    a = abs(v)
    if v == int(v) and a < 1e15:
        text = f"{v:.0f}"  # a count or a whole figure: 16 lanes, 700 W
    else:
        text = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"
    return f"{text} {unit}".strip()


def human_bytes(n: float) -> str:
    """A message size as 64 KiB / 1 GiB (the benchmarks' own wording)."""
    from validator.bench.formulas import human_bytes as exact
    return exact(int(n))


def nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    """Round tick values covering lo..hi (1, 2, 2.5, 5 x 10^k steps)."""
    if not hi - lo > 1e-9:  # equal, reversed, or a subnormal span (log10 of it fails)
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str, *, log2_x: bool = False,
               x_fmt: Callable[[float], str] = round_num, y_fmt: Callable[[float], str] = round_num,
               width: int = 760, height: int = 300, css_class: str = "chart") -> str:
    """One SVG: a polyline and dots per series, y from 0, x linear or log2 (message sizes); '' without points."""
    clean = [Series(s.name, tuple((float(x), float(y)) for x, y in s.points
                                  if _finite(x) and _finite(y) and (not log2_x or x > 0))) for s in series]
    clean = [s for s in clean if s.points]
    if not clean:
        return ""
    left, top, bottom = 64, 28, 44
    right = 44 + 7 * min(22, max(len(s.name) for s in clean))  # room for the legend
    pw, ph = width - left - right, height - top - bottom
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    fx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    x_lo, x_hi = fx(min(xs)), fx(max(xs))
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    digits = next((d for d in range(5) if all(abs(round(t, d) - t) < 1e-9 for t in y_ticks)), 4)  # 0.25: 2
    y_tick_text = (lambda t: f"{t:.{digits}f}") if y_fmt is round_num else y_fmt

    def px(v: float) -> float:
        return left + (fx(v) - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return top + ph - (v - y_lo) / (y_hi - y_lo) * ph

    out = [f'<svg class={quoteattr(css_class)} width="100%" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label={quoteattr(title)}>', f"<title>{escape(title)}</title>",
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>']
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(y_tick_text(t))}</text>')
    for t in _x_ticks(sorted(set(xs)), log2_x, fx):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 5}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{escape(x_fmt(t))}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2:.0f}" text-anchor="middle" transform="rotate(-90 14 '
               f'{top + ph / 2:.0f})">{escape(y_label)}</text>')
    for i, s in enumerate(clean):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s.points))
        out.append(f'<g class="series" data-series={quoteattr(s.name)}>')
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(s.points) <= 40:
            for x, y in s.points:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>'
                           f'{escape(s.name)}: {escape(x_fmt(x))} → {escape(y_fmt(y))}</title></circle>')
        ly = top + 14 + i * 18
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="3"/><text x="{left + pw + 38}" y="{ly}">{escape(s.name[:22])}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _finite(v) -> bool:
    """A plottable number: finite and within +-1e15 (1e308 - -1e308 overflows the axis arithmetic)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 1e15


def _x_ticks(xs: List[float], log2_x: bool, fx) -> List[float]:
    """The data's own x values when few (message sizes), else about 8 round ones."""
    if log2_x:
        if len(xs) <= 10:
            return xs
        step = max(1, round((fx(xs[-1]) - fx(xs[0])) / 8))
        return [2.0 ** e for e in range(int(fx(xs[0])), int(fx(xs[-1])) + 1, step)]
    return [t for t in nice_ticks(xs[0], xs[-1], 8) if xs[0] <= t <= xs[-1]] or [xs[0], xs[-1]]
