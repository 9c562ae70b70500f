"""`gpu-validate bench rdma`: RDMA write bandwidth per HCA port with perftest's ib_write_bw.

Per port that is up (validator/fabric.py), one test at a time, 8 MiB messages, pinned to the HCA's NUMA node
(numactl -N/-m) as Azure's health checks run it: host memory, then GPU memory (`--use_cuda`, GPUDirect RDMA)
on the GPU nearest the HCA when this perftest was built with CUDA. Loopback: server and client on this node
through the same port. Pairwise: `--mode server` on one node, `--mode client --peer HOST` on the other; port i
meets port i (rails). No torch here: perftest does the work, we start it, time it out and read its report."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from validator import fabric, subp
from validator.bench import ncclenv, parsers
from validator.bench.results import BenchRun, Figure, GpuInfo
from validator.errors import CommandError, GpuforgeError
from validator.node import Node
from validator.pci import PciGpu, scan_gpus

TOOL = "ib_write_bw"
CUDA_PORT_OFFSET = 64  # GPU-memory servers listen on base + 64 + i: a client that tests host memory only never waits


@dataclass(frozen=True)
class Target:
    """One HCA port to test, the NUMA node to pin to, and the GPU nearest to it (for GPUDirect)."""

    port: fabric.IbPort
    index: int  # order among the ports tested: the TCP port offset and the rail number
    numa: Optional[int]
    gid_index: Optional[int]
    gpu: Optional[PciGpu]
    gpu_index: Optional[int]  # CUDA index in PCI bus order
    relation: str  # PXB / PHB / NODE / SYS / ?


@dataclass(frozen=True)
class Caps:
    cuda: bool  # --use_cuda in ib_write_bw --help
    cuda_bus_id: bool  # --use_cuda_bus_id
    numactl: Optional[str]


def capabilities() -> Caps:
    try:
        help_text = subp.run([TOOL, "--help"], timeout=30, check=False).stdout
    except GpuforgeError:
        help_text = ""
    return Caps("--use_cuda" in help_text, "--use_cuda_bus_id" in help_text, shutil.which("numactl"))


def targets(node: Node, only: Tuple[str, ...] = ()) -> Tuple[List[Target], List[str]]:
    """The ports to test (up, optionally only the named HCAs/ports) and why others are left out."""
    gpus = scan_gpus(node.root)
    out, notes = [], []
    for h in fabric.read_hcas(node):
        for p in h.ports:
            if only and h.name not in only and p.name not in only:
                continue
            if not p.up:
                notes.append(f"{p.name} left out: {p.state or '?'} / {p.phys_state or '?'}")
                continue
            gpu, gi, rel = _nearest_gpu(node, h, gpus)
            gid = ncclenv.roce_gid_index(node, p) if p.link_layer == "Ethernet" else None
            out.append(Target(p, len(out), h.numa_node, gid, gpu, gi, rel))
    return out, notes


def _nearest_gpu(node: Node, h: fabric.Hca, gpus: List[PciGpu]):
    best = (None, None, "?")
    for i, g in enumerate(gpus):
        rel = fabric.pci_relation(fabric.pci_components(node, g.sysfs_path), g.numa_node, h.pci_path, h.numa_node)
        if best[0] is None or fabric.RELATION_RANK[rel] < fabric.RELATION_RANK[best[2]]:
            best = (g, i, rel)
    return best


def argv(t: Target, caps: Caps, size: int, tcp_port: int, cuda: bool, peer: Optional[str] = None) -> List[str]:
    """One side of one test; the same options on both sides, as perftest requires (the peer only on the client)."""
    a = [TOOL, "-d", t.port.hca, "-i", str(t.port.port), "-s", str(size), "-F", "--report_gbits",
         "--perform_warm_up", "-p", str(tcp_port)]
    if t.gid_index is not None:
        a += ["-x", str(t.gid_index)]
    if cuda:
        a += [f"--use_cuda_bus_id={t.gpu.address}"] if caps.cuda_bus_id else [f"--use_cuda={t.gpu_index}"]
    if peer:
        a.append(peer)
    if caps.numactl and t.numa is not None:
        a = [caps.numactl, "-N", str(t.numa), "-m", str(t.numa)] + a
    return a


_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # --use_cuda=<index> counts GPUs in PCI order, like scan_gpus


def _kinds(t: Target, caps: Caps, gpudirect: str) -> List[str]:
    want = gpudirect != "off" and t.gpu is not None and caps.cuda
    return ["host", "cuda"] if want else ["host"]


def _figure(t: Target, kind: str, rep: parsers.IbWriteBw, mode: str, size: int, caps: Caps) -> Figure:
    gbps = rep.avg_gbps or 0.0
    where = f"NUMA {t.numa}" if t.numa is not None and caps.numactl else "not pinned"
    detail = (f"{mode}, {size >> 20} MiB writes, {t.port.rate_text or '?'} {t.port.link_layer}, {where}"
              + (f", GPU {t.gpu.address} ({t.relation})" if kind == "cuda" else ", host memory"))
    meta = {"hca": t.port.hca, "port": t.port.port, "rate_gbps": t.port.rate_gbps, "memory": kind, "mode": mode,
            "size": size, "link_layer": t.port.link_layer, "numa": t.numa, "peak_gbps": rep.rows[-1][2],
            "iterations": rep.rows[-1][1], "gpu_bus_id": t.gpu.address if t.gpu else None, "relation": t.relation}
    return Figure("rdma", f"ib_write_bw_{t.port.hca}_{t.port.port}_{'gpudirect' if kind == 'cuda' else 'host'}",
                  gbps, "Gb/s", t.gpu_index if kind == "cuda" else None, detail, meta=meta)


def _client(cmd: List[str], timeout: float, peer_wait: float) -> parsers.IbWriteBw:
    """Run a client; while the server is not listening yet (or not reachable), retry until peer_wait is spent."""
    deadline = time.monotonic() + peer_wait
    while True:
        res = subp.run(cmd, timeout=timeout, env=_ENV, check=False)
        rep = parsers.parse_ib_write_bw(res.stdout + res.stderr)
        if rep.rows or not (rep.error or "").startswith("peer did not answer") or time.monotonic() > deadline:
            if not rep.rows and not rep.error:
                rep.error = f"exit status {res.returncode}, no report: {(res.stdout + res.stderr).strip()[-200:]}"
            return rep
        time.sleep(1.0)


def _no_ports(notes: List[str], port_base: int) -> BenchRun:
    """Nothing to test: say why, in perftest's own words when it runs at all."""
    why = "no InfiniBand/RoCE port is up" + (f" ({'; '.join(notes)})" if notes else f" ({fabric.IB_CLASS} is empty)")
    try:  # perftest's own answer on this node (e.g. "Did not detect devices")
        res = subp.run([TOOL, "-s", "8", "-p", str(port_base), "127.0.0.1"], timeout=15, check=False)
        lines = [x.strip() for x in (res.stdout + res.stderr).strip().splitlines() if x.strip()]
        if lines:
            why += f"; {TOOL}: {' / '.join(lines[:3])}"
    except GpuforgeError as e:
        why += f"; {TOOL}: {e.message.splitlines()[0]}"
    return BenchRun("rdma", skipped=why)


def run(mode: str = "loopback", peer: Optional[str] = None, hcas: Tuple[str, ...] = (), size: int = 8 << 20,
        gpudirect: str = "auto", port_base: int = 18515, test_timeout: float = 120.0,
        peer_timeout: float = 120.0, node: Optional[Node] = None) -> BenchRun:
    """loopback | server | client, per port that is up; every failure becomes an error of the run, not a crash."""
    node = node or Node("/")
    if not shutil.which(TOOL):
        return BenchRun("rdma", skipped=f"{TOOL} not installed (Debian/Ubuntu: apt install perftest; "
                                        "GPUDirect needs a perftest built with CUDA)")
    ts, notes = targets(node, hcas)
    if not ts:
        return _no_ports(notes, port_base)
    caps = capabilities()
    run = BenchRun("rdma", info={"mode": mode, "peer": peer, "size": size, "perftest_cuda": caps.cuda,
                                 "numactl": bool(caps.numactl), "left_out": notes,
                                 "targets": [{"hca": t.port.name, "numa": t.numa, "gpu": t.gpu.address if t.gpu else None,
                                              "relation": t.relation, "gid_index": t.gid_index} for t in ts]})
    run.gpus = [GpuInfo(i, "", g.device_id, g.address) for i, g in enumerate(scan_gpus(node.root))]
    if gpudirect == "on" and not caps.cuda:
        run.errors.append(f"GPUDirect asked for, but this {TOOL} has no --use_cuda (built without CUDA)")
    elif gpudirect != "off" and not caps.cuda:
        run.info["note"] = f"GPUDirect not measured: this {TOOL} was built without CUDA (no --use_cuda)"
    if mode == "server":
        _serve(run, ts, caps, size, gpudirect, port_base, test_timeout, peer_timeout)
    else:
        for t in ts:
            for kind in _kinds(t, caps, gpudirect):
                _one(run, t, kind, caps, size, mode, port_base, test_timeout, peer_timeout, peer)
    return run


def _tcp_port(base: int, t: Target, kind: str) -> int:
    return base + t.index + (CUDA_PORT_OFFSET if kind == "cuda" else 0)


def _one(run: BenchRun, t: Target, kind: str, caps: Caps, size: int, mode: str, base: int, test_timeout: float,
         peer_timeout: float, peer: Optional[str]) -> None:
    port = _tcp_port(base, t, kind)
    label = f"{t.port.name} {kind}"
    server = None
    try:
        if mode == "loopback":
            server = subp.Background(argv(t, caps, size, port, kind == "cuda"), env=_ENV)
            peer = "127.0.0.1"
        rep = _client(argv(t, caps, size, port, kind == "cuda", peer), test_timeout,
                      peer_timeout if mode == "client" else 10.0)
        if server is not None:
            try:
                server.wait(timeout=15)
            except CommandError:
                pass  # the client's report is what counts; the server was stopped
    except GpuforgeError as e:
        run.errors.append(f"{label}: {e.message.splitlines()[0]}")
        return
    finally:
        if server is not None:
            server.stop()
    if rep.rows:
        run.figures.append(_figure(t, kind, rep, mode, size, caps))
    elif rep.error and rep.error.startswith("peer did not answer"):
        run.errors.append(f"{label}: {rep.error} after {peer_timeout:g} s (is `gpu-validate bench rdma --mode server` "
                          f"running on {peer}, TCP port {port} open?)")
    else:
        run.errors.append(f"{label}: {rep.error}")


def _serve(run: BenchRun, ts: List[Target], caps: Caps, size: int, gpudirect: str, base: int, test_timeout: float,
           peer_timeout: float) -> None:
    """Servers for every port and memory kind at once; done when each had its client, or after peer_timeout
    seconds without one finishing."""
    servers = []
    try:
        for t in ts:
            for kind in _kinds(t, caps, gpudirect):
                servers.append((t, kind, subp.Background(argv(t, caps, size, _tcp_port(base, t, kind),
                                                              kind == "cuda"), env=_ENV)))
        run.info["listening"] = [f"{t.port.name} {kind} tcp {_tcp_port(base, t, kind)}" for t, kind, _ in servers]
        last = time.monotonic()
        pending = list(servers)
        while pending and time.monotonic() - last < peer_timeout + test_timeout:
            for s in list(pending):
                if not s[2].running():
                    pending.remove(s)
                    last = time.monotonic()
            time.sleep(0.5)
        served = [s for s in servers if s not in pending]
        for t, kind, bg in served:
            rep = parsers.parse_ib_write_bw(bg.stop().stdout)
            if rep.error and not rep.rows:
                run.errors.append(f"{t.port.name} {kind} server: {rep.error}")
        if pending:
            run.errors.append("no client came for " + ", ".join(f"{t.port.name} {kind}" for t, kind, _ in pending)
                              + f" within {peer_timeout:g} s (start `gpu-validate bench rdma --mode client --peer "
                              f"{os.uname().nodename}` on the other node)")
        run.skipped = None if run.errors else "server side: the client measures (results are on the client node)"
    finally:
        for _, _, bg in servers:
            bg.stop()
