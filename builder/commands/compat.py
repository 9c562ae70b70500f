"""gpuforge compat: can this GPU run this CUDA (with this driver)? Yes/no with the rule that decided."""

from __future__ import annotations

import json
import re

import click

from validator.catalog import load_catalog
from validator.errors import UserError
from validator.idlists import lists_for_driver, offered
from validator.selection import DriverChoice, evaluate_driver, recommend


def _line(d) -> str:
    return f"  {'yes' if d.ok else 'no ':3} [{d.rule}] {d.reason}"


def _show_choice(c: DriverChoice) -> None:
    click.echo(f"driver {c.driver_version} (branch {c.branch}):")
    for d in c.decisions:
        click.echo(_line(d))


@click.command("compat")
@click.option("--gpu", required=True, help="Model, family or PCI ID: 'H100', 'A100 PCIe 80GB', '2330'.")
@click.option("--cuda", help="CUDA toolkit version, e.g. 12.4.")
@click.option("--driver", help="Exact driver version, e.g. 535.261.03 (default: every offered driver, newest that fits).")
@click.option("--flavour", type=click.Choice(["open", "proprietary"]), help="Only this kernel-module flavour.")
@click.option("--catalog", "catalog_path", envvar="GPUFORGE_CATALOG", type=click.Path(dir_okay=True),
              help="GPU catalog YAML (default: the packaged one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable answer.")
@click.pass_context
def command(ctx, gpu, cuda, driver, flavour, catalog_path, as_json):
    """Explain whether GPU can run CUDA [with DRIVER]. Exit 0 yes, 1 no, 2 bad input."""
    cat = load_catalog(catalog_path)
    model = cat.find(gpu)
    if cuda is not None:
        cat.cuda_min_driver_for(cuda)  # unknown CUDA version: exit 2 with the known ones
    if driver is not None and not re.fullmatch(r"\d{3}\.\d+(\.\d+)?", driver):
        raise UserError(f"--driver {driver!r} is not a driver version", hint="like 535.261.03")
    head = f"{model.name} (10de:{model.pci_ids[0]:04x}, {model.arch}, compute capability {model.compute_capability})"
    if driver is not None:
        c = evaluate_driver(model, driver, lists_for_driver(driver), cat, cuda, flavour)
        ok, deciding = c.ok, c.deciding
        result = {"gpu": model.name, "cuda": cuda, "ok": ok, "rule": deciding.rule, "reason": deciding.reason, **c.to_dict()}
        if not as_json:
            click.echo(head + (f", CUDA {cuda}" if cuda else ""))
            _show_choice(c)
            verdict = f"with driver {driver} ({c.flavour})" if ok else ""
    else:
        r = recommend(model, offered(), cat, cuda, flavour)
        ok, deciding = r.ok, r.reason
        result = {"gpu": model.name, **r.to_dict()}
        if not as_json:
            click.echo(head + (f", CUDA {cuda}" if cuda else "") + ", offered drivers:")
            for c in r.choices:
                _show_choice(c)
            verdict = f"with driver {r.driver_version} ({r.flavour}), CUDA up to {r.cuda}" if ok else ""
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif ok:
        click.echo(f"YES {verdict} [{deciding.rule}]")
    else:
        click.echo(f"NO [{deciding.rule}]: {deciding.reason}")
    ctx.exit(0 if ok else 1)
