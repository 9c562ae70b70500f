"""gpu-validate bench bandwidth|gemm|nccl|train|all: the benchmarks, compared with the catalog baselines."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time

import click

from validator.atomic import check_writable, write_text
from validator.clibase import ByteSize, FloatIn, IntIn, format_for_path, output_options, pick_format
from validator.bench import evaluate, suite
from validator.bench.formulas import COLLECTIVES, human_bytes
from validator.bench.gpt import CONFIGS
from validator.errors import UserError
from validator.report.render import FORMATS, PROBLEMS, render, summary_line
from validator.termtext import WIDTH

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _catalog():
    try:
        from validator.catalog import load_catalog

        return load_catalog()
    except Exception:
        return None


def _csv(ctx, param, value):
    if value is None or isinstance(value, tuple):
        return value
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _gpus(ctx, param, value):
    if not value:
        return ()
    try:
        return tuple(int(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected GPU indices like 0,1,2, got {value!r}") from None


# Byte counts from one byte to 1 TiB: above any GPU's memory, so a typo of units is caught rather than allocated.
SIZE = ByteSize(1, 1 << 40)


def common(f):
    f = click.option("--gpus", callback=_gpus, default="", help="GPU indices (default: all).")(f)
    f = click.option("--short", is_flag=True, help="The short version run at validation level full.")(f)
    f = output_options(FORMATS, "term")(f)
    f = click.option("--out-dir", type=click.Path(file_okay=False),
                     help="Write every report format (report.json/.html/.xml/.prom/.txt) and bench.json here.")(f)
    f = click.option("--save", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
                     help="Also write the report here, format from the extension (.json .html .xml .prom .txt).")(f)
    f = click.option("--stream", is_flag=True, help="Show the benchmark child's own output live.")(f)
    return f


def fabric_options(f):
    """Multi-node knobs shared by nccl and train."""
    f = click.option("--nccl-env", multiple=True, metavar="KEY=VALUE",
                     help="Override an NCCL setting derived from the node (NCCL_IB_HCA, NCCL_SOCKET_IFNAME, ...).")(f)
    f = click.option("--peer-timeout", type=FloatIn(1, 86400), default=None,
                     help="Seconds to wait for the other ranks (rendezvous and each collective) [120].")(f)
    return f


def _options(short: bool, **kw) -> suite.Options:
    kw = {k: v for k, v in kw.items() if v is not None}
    return suite.Options.short(**kw) if short else suite.Options(**kw)


def render_table(results, problems: bool = False) -> str:
    """status / check / subject / observed, the observed text wrapped so every line fits 120 columns."""
    shown = [r for r in results if not problems or r.status in PROBLEMS]
    rows = [("status", "check", "subject", "observed")] + [(_MARK[r.status], r.id, r.subject, r.observed) for r in shown]
    w = [max(len(str(row[i])) for row in rows) for i in range(3)]
    indent = w[0] + w[1] + w[2] + 6
    lines = []
    for a, b, c, d in rows:
        text = textwrap.wrap(d, max(40, WIDTH - indent), break_on_hyphens=False) or [""]
        lines.append(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {text[0]}")
        lines += [" " * indent + t for t in text[1:]]
    if problems and not shown:
        lines.append("no warnings or failures")
    return "\n".join(lines)


def _finish(names, o: suite.Options, fmt, output, as_json, problems, out_dir, save=()) -> None:
    fmt = pick_format(fmt, as_json, output, FORMATS, "term")
    save_fmts = [(p, format_for_path(p)) for p in save]  # a bad extension is a usage error before any work
    for p in (*save, *([output] if output else []), *([os.path.join(out_dir, "bench.json")] if out_dir else [])):
        check_writable(p)  # an unwritable path is a usage error before minutes of benchmarks
    started, t0 = time.time(), time.perf_counter()
    from validator import events
    from validator.progress import BenchProgress, is_tty
    with events.listening(BenchProgress(sys.stderr)) if is_tty(sys.stderr) else contextlib.nullcontext():
        rep = suite.run_suites(names, o)
    catalog = _catalog()
    results = []
    for run in rep.runs:
        results.extend(evaluate.to_results(run, catalog, rep.topology, duration_ms=run.seconds * 1e3))
    from validator.bench import report_out

    data = report_out.bench_data(rep.runs, rep.topology, time.perf_counter() - t0)
    report = report_out.make_report(results, rep.runs, started, time.perf_counter() - t0, {"bench": data})
    if fmt == "term":
        text = render_table(results, problems) + "\n" + "".join(
            f"# {run.suite}: {run.seconds:.1f} s" + (f", skipped: {run.skipped}" if run.skipped else "") + "\n"
            for run in rep.runs)
    else:
        text = render(report, fmt, problems=problems)
    if output:
        write_text(output, text)
        click.echo(summary_line(report), err=True)
    else:
        click.echo(text, nl=False)
    for path, f in save_fmts:
        report_out.save(path, report, f)
    if out_dir:
        report_out.write(out_dir, report, dict(data, results=[r.to_dict() for r in results]))
    sys.exit(report.exit_code)  # as `gpu-validate run`: 0 pass, 1 any fail, 3 warnings only


@click.group("bench")
def command():
    """Benchmarks against the catalog baselines (CUDA work runs in a child process)."""


@command.command("bandwidth")
@common
@click.option("--size", type=SIZE, default="1G", show_default=True, help="Bytes per copy.")
@click.option("--reps", type=IntIn(1, 1000), default=None, help="Timed repetitions (median taken).")
def bandwidth(gpus, short, fmt, output, as_json, problems, out_dir, save, stream, size, reps):
    """H2D/D2H pinned and pageable, both ways at once, device copy, P2P per pair; nvbandwidth too if installed."""
    _finish(["bandwidth"], _options(short, gpus=gpus, size_bytes=size, reps=reps, verbose=stream),
            fmt, output, as_json, problems, out_dir, save)


@command.command("gemm")
@common
@click.option("--seconds", type=FloatIn(0.5, 36000), default=None, help="Seconds per dtype.")
@click.option("--dtypes", callback=_csv, default="bf16,fp16,tf32,fp32,fp64", show_default=True)
@click.option("--size", "n", type=IntIn(256, 65536), default=8192, show_default=True, help="n of n^3 GEMMs.")
def gemm(gpus, short, fmt, output, as_json, problems, out_dir, save, stream, seconds, dtypes, n):
    """Sustained GEMM on every GPU at once, gpu-burn style error check, NVML samples; gpu_burn/dcgmi if installed."""
    bad = [d for d in dtypes if d not in ("bf16", "fp16", "tf32", "fp32", "fp64")]
    if bad:
        raise UserError(f"--dtypes: unknown {', '.join(bad)}; known: bf16, fp16, tf32, fp32, fp64")
    _finish(["gemm"], _options(short, gpus=gpus, gemm_seconds=seconds, dtypes=tuple(dtypes), gemm_size=n,
                               verbose=stream), fmt, output, as_json, problems, out_dir, save)


@command.command("nccl")
@common
@click.option("--ops", callback=_csv, default=",".join(COLLECTIVES), show_default=True)
@click.option("--min-bytes", type=SIZE, default="1M", show_default=True)
@click.option("--max-bytes", type=SIZE, default=None, help="Largest size (gated on) [default 8G].")
@click.option("--factor", type=IntIn(2, 64), default=None, help="Size step factor [4; short 8].")
@click.option("--engine", type=click.Choice(["auto", "torch", "nccl-tests"]), default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["nccl", "gloo"]), default="nccl", show_default=True,
              help="gloo: the same collectives between 2 CPU processes (a smoke test without GPUs).")
@click.option("--iters", type=IntIn(0, 100000), default=None,
              help="Timed calls per size [0 = auto: 20 up to 64 MiB, 10 up to 1 GiB, 5 above].")
@click.option("--warmup-iters", type=IntIn(0, 1000), default=None, help="Untimed calls per size first [3].")
@fabric_options
def nccl(gpus, short, fmt, output, as_json, problems, out_dir, save, stream, ops, min_bytes, max_bytes, factor, engine,
         backend, iters, warmup_iters, nccl_env, peer_timeout):
    """Collectives through torch.distributed (one process per GPU; torchrun/srun/mpirun aware, one node or many);
    the transport NCCL chose (NET/IB, NET/Socket, P2P, SHM) from its INFO log; nccl-tests too."""
    bad = [x for x in ops if x not in COLLECTIVES]
    if bad:
        raise UserError(f"--ops: unknown {', '.join(bad)}; known: {', '.join(COLLECTIVES)}")
    largest = max_bytes if max_bytes is not None else _options(short).nccl_max
    if min_bytes > largest:
        raise UserError(f"--min-bytes {human_bytes(min_bytes)} is above --max-bytes {human_bytes(largest)}",
                        hint="the sweep runs from --min-bytes up to --max-bytes")
    _finish(["nccl"], _options(short, gpus=gpus, nccl_ops=tuple(ops), nccl_min=min_bytes, nccl_max=max_bytes,
                               nccl_factor=factor, nccl_engine=engine, nccl_backend=backend, nccl_iters=iters,
                               nccl_warmup=warmup_iters, nccl_env=tuple(nccl_env), peer_timeout_s=peer_timeout,
                               verbose=stream), fmt, output, as_json, problems, out_dir, save)


@command.command("train")
@common
@click.option("--model", type=click.Choice(sorted(CONFIGS)), default="gpt-1.2b", show_default=True)
@click.option("--steps", type=IntIn(1, 100000), default=None, help="Timed steps [30; short 15].")
@click.option("--warmup", type=IntIn(1, 1000), default=None, help="Untimed steps first (compile).")
@click.option("--micro-batch", type=IntIn(1, 4096), default=None, help="Sequences per GPU per step.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--engine", type=click.Choice(["builtin", "megatron"]), envvar="GPUFORGE_TRAIN_ENGINE",
              default="builtin", show_default=True, help="megatron: Megatron-LM when installed (NGC container).")
@click.option("--compile/--no-compile", "compile_", default=True, show_default=True, help="torch.compile the blocks.")
@click.option("--scaling/--no-scaling", default=True, show_default=True,
              help="With several GPUs, also train on GPU 0 alone first: scaling efficiency vs 1 GPU.")
@click.option("--data-parallel", "dp", type=click.Choice(["blocks", "ddp"]), default=None,
              help="How the ranks average gradients [blocks: one all-reduce per group of transformer blocks, "
                   "straight on the gradients; ddp: PyTorch DDP buckets].")
@fabric_options
def train(gpus, short, fmt, output, as_json, problems, out_dir, save, stream, model, steps, warmup, micro_batch, device,
          engine, compile_, scaling, dp, nccl_env, peer_timeout):
    """GPT on synthetic tokens, bf16, SDPA: tokens/s, model TFLOP/s (Megatron formula), MFU vs dense peak,
    scaling efficiency vs 1 GPU."""
    _finish(["train"], _options(short, gpus=gpus, train_model=model, train_steps=steps, train_warmup=warmup,
                                micro_batch=micro_batch, train_device=device, train_engine=engine,
                                compile=compile_, train_scaling=scaling, train_dp=dp, nccl_env=tuple(nccl_env),
                                peer_timeout_s=peer_timeout, verbose=stream), fmt, output, as_json, problems, out_dir,
            save)


@command.command("rdma")
@common
@click.option("--mode", type=click.Choice(["loopback", "server", "client"]), default="loopback", show_default=True,
              help="loopback: server and client on this node through each port; server/client: two nodes, port i "
                   "meets port i.")
@click.option("--peer", metavar="HOST", help="The node running --mode server (client mode).")
@click.option("--hca", "hcas", callback=_csv, default="", help="Only these HCAs or ports (mlx5_0,mlx5_1:1) [all up].")
@click.option("--size", type=SIZE, default="8M", show_default=True, help="Message size.")
@click.option("--gpudirect", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="GPU memory (--use_cuda) too: auto when perftest has CUDA, on = required.")
@click.option("--port-base", type=IntIn(1024, 65000), default=18515, show_default=True,
              help="TCP port of the first HCA port's test (base + i for port i; GPU memory base + 64 + i).")
@click.option("--peer-timeout", type=FloatIn(1, 86400), default=None,
              help="Seconds to wait for the other node (server or client) [120].")
def rdma(gpus, short, fmt, output, as_json, problems, out_dir, save, stream, mode, peer, hcas, size, gpudirect,
         port_base, peer_timeout):
    """RDMA write bandwidth per HCA port with perftest's ib_write_bw: host memory and GPUDirect, NUMA-pinned."""
    if mode == "client" and not peer:
        raise UserError("--mode client needs --peer HOST (the node running --mode server)")
    if mode != "client" and peer:
        raise UserError("--peer is for --mode client")
    _finish(["rdma"], _options(short, rdma_mode=mode, rdma_peer=peer, rdma_hcas=tuple(hcas or ()), rdma_size=size,
                               rdma_gpudirect=gpudirect, rdma_port_base=port_base, peer_timeout_s=peer_timeout,
                               verbose=stream), fmt, output, as_json, problems, out_dir, save)


@command.command("all")
@common
def all_(gpus, short, fmt, output, as_json, problems, out_dir, save, stream):
    """bandwidth, gemm, nccl, train and rdma (loopback) in turn."""
    _finish(list(suite.SUITES), _options(short, gpus=gpus, verbose=stream), fmt, output, as_json, problems, out_dir, save)
