"""gpu-validate baselines: the performance baseline database per GPU model (list, info MODEL)."""

from __future__ import annotations

import json

import click

from validator.catalog import BASELINE_FIELDS, load_catalog

_LABELS = {
    "mem_bw_gbs": ("device memory copy", "GB/s"),
    "nvlink_gbs": ("GPU-to-GPU P2P (NVLink)", "GB/s"),
    "pcie_h2d_gbs": ("host-to-device PCIe, pinned", "GB/s"),
    "allreduce_busbw_gbs": ("NCCL all-reduce busbw, 8 GPUs", "GB/s"),
    "gpt_tflops": ("GPT-1.2B training, per GPU", "TFLOP/s"),
    "gpt_mfu": ("GPT-1.2B MFU", ""),
    "gpt_samples_per_s": ("GPT-1.2B samples/s, per GPU", "samples/s"),
    "rdma_gdr_gbps": ("ib_write_bw GPUDirect, per NDR HCA port", "Gb/s"),
}
_SHORT = {"mem_bw_gbs": "mem", "nvlink_gbs": "p2p", "pcie_h2d_gbs": "h2d", "allreduce_busbw_gbs": "allreduce",
          "gpt_tflops": "gpt_tflops", "gpt_mfu": "mfu", "gpt_samples_per_s": "samples/s", "rdma_gdr_gbps": "gdr"}

catalog_option = click.option("--catalog", "catalog_path", envvar="GPUFORGE_CATALOG", type=click.Path(),
                              help="GPU catalog YAML (default: the packaged one; baselines.yaml next to it).")


def _fmt(field: str, v) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.0f}%" if field == "gpt_mfu" else f"{v:g}"


@click.group("baselines")
def command():
    """Expected bandwidth, all-reduce and training figures per GPU model, each with its source."""


@command.command("list")
@catalog_option
@click.option("--json", "as_json", is_flag=True)
def list_cmd(catalog_path, as_json):
    """Every baseline entry (a model, or a family that covers its variants)."""
    cat = load_catalog(catalog_path)
    if as_json:
        click.echo(json.dumps([b.to_dict() for b in cat.baselines], indent=2))
        return
    widths = [16] + [max(len(_SHORT[f]), 6) for f in BASELINE_FIELDS]
    click.echo("  ".join(h.ljust(w) for h, w in zip(["model"] + [_SHORT[f] for f in BASELINE_FIELDS], widths)))
    for b in cat.baselines:
        cells = [b.model] + [_fmt(f, getattr(b, f)) for f in BASELINE_FIELDS]
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    click.echo("units: GB/s, TFLOP/s, samples/s per GPU; '-' = no trustworthy figure yet. `info MODEL` names sources.")


@command.command("info")
@click.argument("model")
@catalog_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def info(ctx, model, catalog_path, as_json):
    """One model's baseline with the source of every figure, next to its datasheet peaks. Exit 1 if none."""
    cat = load_catalog(catalog_path)
    m = cat.find(model)
    b = cat.baseline(m.name)
    if as_json:
        click.echo(json.dumps({"model": m.to_dict(), "baseline": None if b is None else b.to_dict()}, indent=2))
        ctx.exit(0 if b else 1)
    peaks = ", ".join(f"{k} {v:g}" for k, v in m.peak_tflops.items() if v is not None)
    click.echo(f"{m.name} ({m.arch}, {m.pci_id_strs[0]}): datasheet memory {m.mem_bw_gbs:g} GB/s, "
               f"NVLink {m.nvlink_bw_gbs:g} GB/s, PCIe Gen{m.pcie_gen}, dense TFLOP/s {peaks}")
    if b is None:
        click.echo(f"no baseline for {m.name} yet (family {m.family})")
        ctx.exit(1)
    via = "" if b.model == m.name else f" (from the {b.model} entry)"
    click.echo(f"baseline{via}:")
    for f in BASELINE_FIELDS:
        label, unit = _LABELS[f]
        v = getattr(b, f)
        src = f"  <- {b.sources[f]}" if f in b.sources else ""
        click.echo(f"  {label:<34} {_fmt(f, v):>8} {unit if v is not None else ''}{src}".rstrip())
