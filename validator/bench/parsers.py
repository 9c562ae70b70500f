"""Parsers for the outputs of external benchmark tools, written from their documented layouts.

nvbandwidth (NVIDIA/nvbandwidth README), nccl-tests (*_perf), gpu-burn (wilicc/gpu-burn),
dcgmi diag (DCGM user guide), nvidia-smi topo -m, Megatron-LM training log lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


def _num(tok: str) -> Optional[float]:
    try:
        return float(tok)
    except ValueError:
        return None  # "N/A"


# ---------------------------------------------------------------- nvbandwidth
@dataclass
class NvbwTest:
    """One testcase: matrix[(row, col)] in GB/s (None for N/A), the SUM line, and the matrix title."""

    name: str
    title: str = ""
    matrix: Dict[Tuple[int, int], Optional[float]] = field(default_factory=dict)
    sum_gbs: Optional[float] = None
    waived: bool = False


def parse_nvbandwidth(text: str) -> Dict[str, NvbwTest]:
    """'Running <test>.' / '<title> bandwidth (GB/s)' / header of column ids / rows / 'SUM <test> <v>'."""
    tests: Dict[str, NvbwTest] = {}
    cur: Optional[NvbwTest] = None
    cols: List[int] = []
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"Running (\S+?)\.?$", line)
        if m:
            cur = tests.setdefault(m.group(1), NvbwTest(m.group(1)))
            cols = []
            continue
        if cur is None or not line:
            continue
        if line.lower().startswith("waived"):
            cur.waived = True
            continue
        if "bandwidth" in line.lower() and "(GB/s)" in line:
            cur.title = line
            continue
        m = re.match(r"SUM (\S+) ([\d.]+)", line)
        if m:
            tests.setdefault(m.group(1), NvbwTest(m.group(1))).sum_gbs = float(m.group(2))
            continue
        toks = line.split()
        if toks and all(t.isdigit() for t in toks) and not cols:
            cols = [int(t) for t in toks]
            continue
        if cols and toks and toks[0].isdigit() and len(toks) == len(cols) + 1:
            row = int(toks[0])
            for c, tok in zip(cols, toks[1:]):
                cur.matrix[(row, c)] = _num(tok)
    return tests


# ---------------------------------------------------------------- nccl-tests
@dataclass(frozen=True)
class NcclRow:
    size: int
    count: int
    dtype: str
    redop: str
    time_us: float
    algbw: float
    busbw: float
    wrong: Optional[int]
    ip_time_us: Optional[float]
    ip_algbw: Optional[float]
    ip_busbw: Optional[float]


@dataclass
class NcclTestsOutput:
    rows: List[NcclRow] = field(default_factory=list)
    avg_busbw: Optional[float] = None
    out_of_bounds: Optional[int] = None
    nranks: Optional[int] = None


def parse_nccl_tests(text: str) -> NcclTestsOutput:
    """Data rows: size count type redop [root] | time algbw busbw #wrong | time algbw busbw #wrong.

    Reading the last eight columns from the end covers both layouts (with and without 'root',
    '#wrong' as an integer or the older 'error' float)."""
    out = NcclTestsOutput()
    ranks = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if re.match(r"#\s+Rank\s+\d+", line):
                ranks += 1
            m = re.search(r"Avg bus bandwidth\s*:\s*([\d.]+)", line)
            if m:
                out.avg_busbw = float(m.group(1))
            m = re.search(r"Out of bounds values\s*:\s*(\d+)", line)
            if m:
                out.out_of_bounds = int(m.group(1))
            continue
        toks = line.split()
        if len(toks) < 12 or not toks[0].isdigit() or not toks[1].isdigit():
            continue
        tail = toks[-8:]
        oop_t, oop_a, oop_b = _num(tail[0]), _num(tail[1]), _num(tail[2])
        if oop_t is None or oop_a is None or oop_b is None:
            continue
        wrong = _num(tail[3])
        out.rows.append(
            NcclRow(
                size=int(toks[0]),
                count=int(toks[1]),
                dtype=toks[2],
                redop=toks[3],
                time_us=oop_t,
                algbw=oop_a,
                busbw=oop_b,
                wrong=None if wrong is None else int(wrong),
                ip_time_us=_num(tail[4]),
                ip_algbw=_num(tail[5]),
                ip_busbw=_num(tail[6]),
            )
        )
    out.nranks = ranks or None
    return out


# ---------------------------------------------------------------- gpu-burn
@dataclass
class GpuBurnOutput:
    gflops: Dict[int, float] = field(default_factory=dict)  # last progress line, per GPU
    errors: Dict[int, int] = field(default_factory=dict)
    temps: Dict[int, float] = field(default_factory=dict)
    verdict: Dict[int, str] = field(default_factory=dict)  # "OK" / "FAULTY"

    @property
    def ok(self) -> bool:
        return bool(self.verdict) and all(v == "OK" for v in self.verdict.values())


def parse_gpu_burn(text: str) -> GpuBurnOutput:
    """Progress: '50.0%  proc'd: 4824 (37584 Gflop/s) - 4800 (37000 Gflop/s)   errors: 0 - 0   temps: 45 C - 46 C';
    end: 'GPU 0: OK' / 'GPU 1: FAULTY'."""
    out = GpuBurnOutput()
    for raw in text.replace("\r", "\n").splitlines():
        line = raw.strip()
        m = re.match(r"GPU (\d+): (OK|FAULTY)\b", line)
        if m:
            out.verdict[int(m.group(1))] = m.group(2)
            continue
        if "proc'd:" in line and "Gflop/s" in line:
            gf = [float(x) for x in re.findall(r"\(([\d.]+) Gflop/s\)", line)]
            out.gflops = dict(enumerate(gf))
            m = re.search(r"errors:\s*([^a-z]+?)\s*(?:temps:|$)", line)
            if m:
                errs = [int(x) for x in re.findall(r"\d+", m.group(1))]
                out.errors = dict(enumerate(errs))
            m = re.search(r"temps:\s*(.*)$", line)
            if m:
                out.temps = {i: float(t) for i, t in enumerate(re.findall(r"(\d+) C", m.group(1)))}
    return out


# ---------------------------------------------------------------- dcgmi diag
def parse_dcgmi_diag(text: str) -> Dict[str, str]:
    """'| Memory Bandwidth | Pass - All |' rows -> {'Memory Bandwidth': 'Pass - All'} (Metadata rows too)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*$", line.strip())
        if m and not m.group(1).startswith(("-", "=", "Diagnostic")):
            out[m.group(1)] = m.group(2)
    return out


def dcgmi_failures(results: Dict[str, str]) -> List[str]:
    return [f"{k}: {v}" for k, v in results.items() if v.lower().startswith(("fail", "error"))]


# ---------------------------------------------------------------- nvidia-smi topo -m
@dataclass
class Topology:
    gpus: List[str] = field(default_factory=list)
    links: Dict[Tuple[int, int], str] = field(default_factory=dict)  # (0, 1) -> "NV18"
    cpu_affinity: Dict[int, str] = field(default_factory=dict)
    numa_affinity: Dict[int, str] = field(default_factory=dict)

    def nvlinks(self, a: int, b: int) -> int:
        m = re.match(r"NV(\d+)", self.links.get((a, b), ""))
        return int(m.group(1)) if m else 0


def parse_topo_matrix(text: str) -> Topology:
    """The matrix part of `nvidia-smi topo -m` (ANSI underline codes in the header are ignored)."""
    topo = Topology()
    header: List[str] = []
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()
        if not line.strip() or line.strip().startswith("Legend"):
            if header and topo.links:
                break
            continue
        cells = [c.strip() for c in line.split("\t")]
        if not header and "CPU Affinity" in line:
            header = [c for c in cells if c]
            continue
        if header and cells[0].startswith("GPU"):
            name = cells[0]
            vals = cells[1:]
            topo.gpus.append(name)
            me = len(topo.gpus) - 1
            for j, col in enumerate(header):
                if j >= len(vals):
                    break
                if re.fullmatch(r"GPU\d+", col):
                    other = int(col[3:])
                    if other != me:
                        topo.links[(me, other)] = vals[j]
                elif col == "CPU Affinity":
                    topo.cpu_affinity[me] = vals[j]
                elif col == "NUMA Affinity":
                    topo.numa_affinity[me] = vals[j]
    return topo


# ---------------------------------------------------------------- Megatron-LM
_MEGATRON_ITER = re.compile(
    r"iteration\s+(\d+)/\s*(\d+).*?elapsed time per iteration \(ms\):\s*([\d.]+)"
    r"(?:.*?throughput per GPU \(TFLOP/s/GPU\):\s*([\d.]+))?"
)


def parse_megatron_log(text: str) -> List[dict]:
    """Megatron's per-interval log lines -> [{'iteration', 'ms', 'tflops_per_gpu'}]."""
    rows = []
    for line in text.splitlines():
        m = _MEGATRON_ITER.search(line)
        if m:
            rows.append(
                {
                    "iteration": int(m.group(1)),
                    "ms": float(m.group(3)),
                    "tflops_per_gpu": float(m.group(4)) if m.group(4) else None,
                }
            )
    return rows


# ---------------------------------------------------------------- NCCL_DEBUG=INFO
@dataclass
class NcclTransport:
    """What one rank's NCCL INFO log says about how it talks to its peers.

    Line formats from NCCL's source (init.cc, transport/net.cc, p2p.cc, shm.cc), e.g.
    'NCCL INFO Using network Socket', 'NCCL INFO NET/Socket : Using [0]lo:127.0.0.1<0>',
    'NCCL INFO NET/IB : No device found.', 'NCCL INFO comm 0x.. rank 0 nRanks 2 nNodes 2 localRanks 1 ...',
    'NCCL INFO Channel 00/0 : 1[1] -> 0[0] [receive] via NET/Socket/0', '... via P2P/CUMEM', '... via SHM/direct/direct'."""

    version: Optional[str] = None
    network: Optional[str] = None  # the net plugin NCCL assigned: IB, Socket, or a plugin's name
    net_devices: List[str] = field(default_factory=list)  # ["lo"], ["mlx5_0:1/IB", ...]
    ib_found: Optional[bool] = None  # False: "NET/IB : No device found."
    nranks: Optional[int] = None
    nnodes: Optional[int] = None
    local_ranks: Optional[int] = None
    channels: Dict[str, int] = field(default_factory=dict)  # "NET/Socket" -> connections set up that way
    gdr: bool = False  # a NET connection used GPUDirect RDMA (/GDRDMA)

    @property
    def transports(self) -> List[str]:
        return sorted(self.channels)

    def to_dict(self) -> dict:
        return {"version": self.version, "network": self.network, "net_devices": self.net_devices,
                "ib_found": self.ib_found, "nranks": self.nranks, "nnodes": self.nnodes,
                "local_ranks": self.local_ranks, "channels": dict(self.channels), "gdr": self.gdr,
                "transports": self.transports}


_NCCL_VIA = re.compile(r"Channel \d+(?:/\d+)? : \d+\[[0-9a-fx]+\] -> \d+\[[0-9a-fx]+\](?: \[(?:send|receive)\])? "
                       r"via (\S+)")


def _transport_label(via: str) -> str:
    """'NET/Socket/0' -> 'NET/Socket', 'NET/IB/3/GDRDMA' -> 'NET/IB', 'P2P/CUMEM/read' -> 'P2P/CUMEM',
    'SHM/direct/direct' -> 'SHM', 'P2P/IPC' -> 'P2P/IPC'."""
    parts = via.split("/")
    if parts[0] == "NET" and len(parts) > 1:
        return "NET/" + parts[1]
    if parts[0] == "SHM":
        return "SHM"
    return "/".join(parts[:2])


def parse_nccl_info(text: str) -> NcclTransport:
    t = NcclTransport()
    devices: Dict[str, List[str]] = {}  # per net plugin: NCCL may try IB, then fall back to Socket
    for raw in text.splitlines():
        i = raw.find("NCCL INFO ")
        if i < 0:
            continue
        line = raw[i + len("NCCL INFO "):].strip()
        m = re.match(r"NCCL version (\S+)", line)
        if m:
            t.version = m.group(1)
            continue
        m = re.match(r"Using network (\S+)", line)
        if m:
            t.network = m.group(1)
            continue
        if re.match(r"NET/IB ?: No device found", line):
            t.ib_found = False
            continue
        m = re.match(r"NET/(\w+) ?: Using (.*)", line)
        if m:
            devs = re.findall(r"\[\d+\]([^\s;]+)", m.group(2))
            if m.group(1) == "IB" and devs:
                t.ib_found = True
            if devs:
                devices[m.group(1)] = [re.sub(r"<\d+>$", "", d) for d in devs]
            continue
        m = re.search(r"nRanks (\d+) nNodes (\d+) localRanks (\d+)", line)
        if m:
            t.nranks, t.nnodes, t.local_ranks = (int(x) for x in m.groups())
            continue
        m = _NCCL_VIA.search(line)
        if m:
            via = m.group(1)
            label = _transport_label(via)
            t.channels[label] = t.channels.get(label, 0) + 1
            t.gdr = t.gdr or "/GDRDMA" in via
    t.net_devices = devices.get(t.network or "", [])
    return t


# ---------------------------------------------------------------- perftest ib_write_bw
@dataclass
class IbWriteBw:
    """ib_write_bw's report. Format from perftest's source (linux-rdma/perftest, src/perftest_parameters.h):
    RESULT_LINE of dashes, RESULT_FMT_G ' #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]
    MsgRate[Mpps]' (with --report_gbits; [MB/sec] without), REPORT_FMT ' %-7lu    %-10lu       %-7.2lf
    %-7.2lf\\t\\t   %-7.6lf'; the header block of ctx_print_test_info (' Device         : mlx5_0',
    ' Link type       : IB'); with --use_cuda, 'initializing CUDA' and 'allocated GPU buffer ...' first."""

    rows: List[Tuple[int, int, float, float, Optional[float]]] = field(default_factory=list)  # bytes, iters, peak, avg, Mpps
    unit: str = ""  # Gb/sec or MB/sec
    device: Optional[str] = None
    link_type: Optional[str] = None
    cuda: bool = False  # the buffer was GPU memory (--use_cuda took effect)
    error: Optional[str] = None  # the first line that explains a failed run

    @property
    def avg_gbps(self) -> Optional[float]:
        if not self.rows:
            return None
        avg = self.rows[-1][3]
        return avg if self.unit == "Gb/sec" else avg * 8 * 1.048576 / 1000  # perftest's MB is 2^20 bytes


# Lines perftest prints when a run cannot happen, most telling first.
_IBW_ERRORS = (
    (r"Did not detect devices|Unable to find the Infiniband/RoCE device|No IB devices found",
     "no RDMA device"),
    (r"Couldn't connect to ([^\s:]+):(\d+)|Unable to open file descriptor for socket connection|"
     r"Couldn't connect to the server|Unable to init the socket connection", "peer did not answer"),
    (r"Couldn't allocate MR|Failed to register MR|ibv_reg_mr failed", "memory registration failed"),
    (r"Failed to modify QP .* to RTR|Unable to Connect the HCA's through the link", "queue pair did not connect"),
    (r"(?i)cuda.*(error|failed|not supported)|unrecognized option '--use_cuda", "CUDA buffer unavailable"),
)


def parse_ib_write_bw(text: str) -> IbWriteBw:
    r = IbWriteBw()
    for raw in text.splitlines():
        line = raw.strip()
        m = re.search(r"#bytes\s+#iterations\s+BW peak\[([^\]]+)\]", line)
        if m:
            r.unit = m.group(1)
            continue
        m = re.match(r"Device\s*:\s*(\S+)", line) or re.search(r"\bDevice\s+:\s*(\S+)", line)
        if m and r.device is None:
            r.device = m.group(1)
        m = re.match(r"Link type\s*:\s*(\S+)", line)
        if m:
            r.link_type = m.group(1)
        if re.search(r"allocated GPU buffer|initializing CUDA", line):
            r.cuda = True
        if r.unit:
            m = re.match(r"^(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)(?:\s+([\d.]+))?\s*$", line)
            if m:
                r.rows.append((int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4)),
                               float(m.group(5)) if m.group(5) else None))
                continue
        if r.error is None:
            for pat, what in _IBW_ERRORS:
                if re.search(pat, line):
                    r.error = f"{what}: {line}"
                    break
    return r
