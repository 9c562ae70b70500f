"""A report with everything the HTML draws: the real 2xH200 capture with two defects injected (a link down,
recovery errors: failures) and its untuned OS (warnings), plus benchmark measurements. The NCCL sweep and P2P
figures are the ones measured on that machine (facts.md, the capture's README); the burn telemetry goes through
the real telemetry.summarise from samples shaped like a GEMM burn (no GPU here to sample)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

from validator.bench import parsers, telemetry
from validator.bench.report_out import bench_data
from validator.bench.results import BenchRun, Figure
from validator.runner import validate

H200X2 = Path(__file__).parent / "fixtures/nodes/h200x2-nvlink-kvm-guest"
GIB, MIB = 1 << 30, 1 << 20
# all-reduce busbw on the two H200 (facts.md / capture README): size -> GB/s
ALLREDUCE = {1 * MIB: 11.0, 64 * MIB: 230.0, 1 * GIB: 320.0, 8 * GIB: 344.0}


def faulty_h200_copy(dst: Path) -> Path:
    """The capture with GPU1's link 17 down and recovery errors counted on GPU0."""
    shutil.copytree(H200X2, dst, symlinks=True)
    p = dst / "cmd/nvidia-smi-nvlink.txt"
    head, gpu1 = p.read_text().split("GPU 1:")
    p.chmod(0o644)
    p.write_text(head + "GPU 1:" + gpu1.replace("Link 17: 26.562 GB/s", "Link 17: <inactive>"))
    lines = []
    for gpu in (0, 1):
        lines.append(f"GPU {gpu}: NVIDIA H200 (UUID: GPU-{gpu})")
        for link in range(18):
            lines += [f"\t Link {link}: Replay Errors: 0", f"\t Link {link}: Recovery Errors: {3 if (gpu, link) == (0, 4) else 0}",
                      f"\t Link {link}: CRC Errors: 0"]
    (dst / "cmd/nvidia-smi-nvlink-e.txt").write_text("\n".join(lines) + "\n")
    return dst


def _sweep():
    rows = []
    for size, bus in sorted(ALLREDUCE.items()):
        alg = bus  # 2 ranks: busbw = algbw x 2(n-1)/n = algbw
        rows.append([size, round(size / (alg * 1e9) * 1e6, 2), alg, bus])
    return rows


def demo_runs(nccl_run: Optional[BenchRun] = None):
    """nccl (the measured sweep, or a real one given), gemm with burn telemetry, bandwidth with P2P."""
    nccl = nccl_run or BenchRun("nccl", figures=[Figure(
        "nccl", "all_reduce", 344.0, "GB/s", None, detail="busbw at 8 GiB, 2 ranks",
        meta={"size": 8 * GIB, "ranks": 2, "wrong": 0, "sweep": _sweep()})])
    samples = []
    for i in range(240):  # 120 s at 0.5 s: idle, then the burn heats the GPUs and the clocks settle
        load = 1.0 if 10 <= i < 230 else 0.0
        for gpu in (0, 1):
            samples.append(telemetry.Sample(1000.0 + i * 0.5, gpu, 33 + gpu + load * min(35.0, i * 0.4),
                                            75 + load * (610 - 3 * gpu), 1980 - load * min(225, i * 2.0), 2619, 0x4 if load else 0x1))
    gemm = BenchRun("gemm", figures=[Figure("gemm", "bf16_sustained", 760.0 - 3 * g, "TFLOP/s", g) for g in (0, 1)],
                    telemetry=telemetry.summarise(samples))
    bw = BenchRun("bandwidth", figures=[Figure("bandwidth", "p2p_0_1", 393.0, "GB/s", 0),
                                        Figure("bandwidth", "p2p_1_0", 391.2, "GB/s", 1),
                                        Figure("bandwidth", "h2d_pinned", 55.2, "GB/s", 0)])
    return [nccl, gemm, bw]


def demo_report(tmp: Path, nccl_run: Optional[BenchRun] = None):
    rep = validate(root=faulty_h200_copy(tmp / "node"))
    topo = parsers.parse_topo_matrix((H200X2 / "cmd/nvidia-smi-topo.txt").read_text())
    return dataclasses.replace(rep, data={"bench": bench_data(demo_runs(nccl_run), topo, 120.0)})


# ---- a small DOM for assertions on the HTML (stdlib html.parser; no extra package) ---------------------------
from html.parser import HTMLParser  # noqa: E402

VOID = {"br", "meta", "link", "img", "input", "hr", "source", "wbr", "col", "area", "base", "embed", "param", "track"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def iter(self, tag=None):
        for c in self.children:
            if tag is None or c.tag == tag:
                yield c
            yield from c.iter(tag)

    def find(self, tag=None, **attrs):
        return next((n for n in self.iter(tag) if all(_has(n, k, v) for k, v in attrs.items())), None)

    def find_all(self, tag=None, **attrs):
        return [n for n in self.iter(tag) if all(_has(n, k, v) for k, v in attrs.items())]

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


def _has(n: Node, key: str, value: str) -> bool:
    key = key.rstrip("_")
    have = n.attrs.get(key) or ""
    return value in have.split() if key == "class" else have == value


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        n = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        t = Node("#text", {}, self.cur)
        t.text = data
        self.cur.children.append(t)


def dom(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root
