"""`gpuforge matrix`: the build plan (cells and skips with reasons), computed without network or disk writes."""

from __future__ import annotations

import json

import click

from builder.commands._common import choose_matrix, config_option
from builder.plan import load_plan


def render_plan(plan) -> str:
    lines = [f"{len(plan.cells)} cell(s) to build:"]
    w = max([len(c.id) for c in plan.cells] + [4])
    for c in plan.cells:
        lines.append(f"  {c.id:<{w}}  {c.flavour_def.source.pin()}  for {', '.join(c.gpus) or c.why}")
        if c.expect_fail:
            lines.append(f"  {'':<{w}}  expected to fail: {c.expect_fail}")
    if plan.skips:
        lines.append(f"{len(plan.skips)} skipped:")
        w = max(len(s.id) for s in plan.skips)
        for s in plan.skips:
            lines.append(f"  {s.id:<{w}}  {s.reason}")
            lines += [f"  {'':<{w}}    - {d}" for d in s.details]
    if plan.uncovered:
        lines.append("GPUs without a driver on a kernel:")
        for u in plan.uncovered:
            why = "; ".join(dict.fromkeys(u.reasons)) or "no cell serves it"
            lines.append(f"  {u.gpu} on {u.kernel}: {why}")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


@click.command(name="matrix")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan.")
def command(config, as_json):
    """Resolve GPU models x kernels x drivers into cells to build and skips with reasons."""
    _, plan = load_plan(choose_matrix(config, quiet=as_json).path)
    click.echo(json.dumps(plan.to_dict(), indent=2) if as_json else render_plan(plan))
