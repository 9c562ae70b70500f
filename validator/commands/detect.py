"""gpu-validate detect: which NVIDIA GPUs, which driver is loaded, and what this node should install."""

from __future__ import annotations

import json
from pathlib import Path

import click

from validator.atomic import check_writable, write_text
from validator.catalog import load_catalog
from validator.clibase import output_options, pick_format
from validator.detect import Detection, detect
from validator.errors import UserError
from validator.idlists import offered as shipped_offered
from validator.selection import vkey
from validator.termtext import fit_all


def render_text(d: Detection) -> str:
    out = [f"Node root:   {d.root}", f"Kernel:      {d.kernel or 'unknown (not readable)'}"]
    if d.driver.loaded:
        flav = {"open": "open kernel module", "proprietary": "proprietary kernel module"}.get(d.driver.flavour, "flavour unknown")
        cuda = f"; runs CUDA up to {d.driver_max_cuda}" if d.driver_max_cuda else ""
        version = " ".join(x for x in (d.driver.version, d.driver.flavour) if x)
        out.append(f"Driver:      {version} ({flav}, from {d.driver.source}){cuda}")
        for name, dec in d.driver_check:
            out.append(f"             {'supports' if dec.ok else 'does NOT support'} {name} [{dec.rule}]: {dec.reason}")
    else:
        out.append("Driver:      not loaded")
    out.append(f"GPUs ({len(d.gpus)}):")
    for g in d.gpus:
        if g.model:
            m = g.model
            out.append(
                f"  {g.pci.address}  {g.pci.pci_id}  {m.name}  {m.arch}  compute capability {m.compute_capability}"
                f"  {m.memory_gb:g} GB  NUMA node {g.pci.numa_node}"
            )
        else:
            out.append(f"  {g.pci.address}  {g.pci.pci_id}  {g.name}")
    p = d.plan
    if p is not None:
        if d.current_fits:
            out.append(f"Recommended: current driver fits: keep {p.driver_version}"
                       f"{' (' + p.flavour + ' kernel modules)' if p.flavour else ''}, CUDA up to {p.cuda or '?'}")
            out.append(f"             because [{p.reason.rule}] {p.reason.reason}")
        elif p.ok:
            out.append(f"Recommended: driver {p.driver_version} (branch {p.branch}), {p.flavour} kernel modules, CUDA {p.cuda}")
            out.append(f"             because [{p.reason.rule}] {p.reason.reason}")
            out.append(f"Package:     {p.package or 'unknown (kernel not readable)'}")
        else:
            out.append(f"Recommended: none [{p.reason.rule}]: {p.reason.reason}")
    if d.offers:
        out.append("Offered:     drivers that fit every GPU here (newest first):")
        for o in d.offers:
            rel = ""
            if d.driver.version:
                rel = " (upgrade)" if vkey(o.driver_version) > vkey(d.driver.version) else \
                    " (downgrade)" if vkey(o.driver_version) < vkey(d.driver.version) else " (loaded)"
            out.append(f"  {o.driver_version} {', '.join(o.flavours)}{rel}")
            out.extend(f"    {pkg}" for pkg in o.packages)
    elif d.gpus:
        out.append("Offered:     no offered driver fits every GPU here")
    for n in d.notes:
        out.append(f"Note:        {n}")
    return "\n".join(fit_all(out))


@click.command("detect")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Read the node under this directory (a capture in tests).")
@output_options(("text", "json"), "text", problems=False)
@click.option("--cuda", help="Plan for this CUDA version (default: the newest the chosen driver runs).")
@click.option("--offer", "offers", multiple=True,
              help="Driver versions available to this node (repeat; default: every driver with shipped ID lists).")
@click.option("--catalog", "catalog_path", envvar="GPUFORGE_CATALOG", type=click.Path(),
              help="GPU catalog YAML (default: the packaged one).")
@click.option("--strict", is_flag=True, help="Exit 1 when a GPU is unknown or no offered driver fits.")
@click.pass_context
def command(ctx, root, fmt, output, as_json, cuda, offers, catalog_path, strict):
    """Detect NVIDIA GPUs, the loaded driver and kernel; recommend branch, flavour, CUDA and the kmod package.

    Exit 0 when detection ran (the JSON says whether a driver fits; the first-boot hook reads it), 2 on bad
    input; with --strict, 1 when a GPU is unknown or no offered driver fits."""
    cat = load_catalog(catalog_path)
    if cuda is not None:
        cat.cuda_min_driver_for(cuda)
    offered = shipped_offered(extra=tuple(offers))
    if offers:
        offered = [o for o in offered if o[0] in offers]
        for v in offers:
            if not v.replace(".", "").isdigit():
                raise UserError(f"--offer {v!r} is not a driver version", hint="like 550.163.01")
    fmt = pick_format(fmt, as_json, output, ("text", "json"), "text")
    if output:
        check_writable(output)
    d = detect(root, cat, offered, cuda)
    text = json.dumps(d.to_dict(), indent=2) if fmt == "json" else render_text(d)  # JSON: what the first-boot hook reads
    if output:
        write_text(output, text + "\n")
    else:
        click.echo(text)
    healthy = all(g.model is not None for g in d.gpus) and (d.plan is None or d.plan.ok)
    ctx.exit(0 if healthy or not strict else 1)
