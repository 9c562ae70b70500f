"""gpuforge idlists: fetch and show which PCI IDs each NVIDIA driver branch/flavour supports (nvidia-detect)."""

from __future__ import annotations

from pathlib import Path

import click

from builder.idlists import DEFAULT_MIRROR, DEFAULT_SUITES, DEFAULT_VERSIONS, KEYRING, FetchSettings, fetch_versions
from validator.idlists import IDLISTS_DIR, load_all, require_set


@click.group("idlists")
def command():
    """Driver support lists from Debian's nvidia-detect (/usr/share/nvidia/*.ids)."""


@command.command("fetch")
@click.argument("versions", nargs=-1)
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, envvar="GPUFORGE_MIRROR",
              help="Debian mirror URL (an offline farm points this at its own mirror).")
@click.option("--suite", "suites", multiple=True, default=DEFAULT_SUITES, show_default=True,
              help="Suites to look in (repeat).")
@click.option("--keyring", default=KEYRING, show_default=True, help="Keyring apt checks the archive with.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=IDLISTS_DIR,
              show_default=True, help="Where <driver-version>.yaml goes.")
def fetch(versions, mirror, suites, keyring, out_dir):
    """Download nvidia-detect VERSIONS (default: the drivers we offer) with apt, parse, write the lists."""
    settings = FetchSettings(mirror=mirror.rstrip("/"), suites=tuple(suites), keyring=keyring)
    for r in fetch_versions(list(versions) or list(DEFAULT_VERSIONS), Path(out_dir), settings):
        counts = ", ".join(f"{lst.name} {len(lst.ids)}" for lst in r.set.lists if not lst.name.startswith("nvidia-legacy"))
        click.echo(f"{r.set.package_version} ({r.set.suite}) -> {r.path} in {r.seconds:.1f}s: {counts}")


@command.command("list")
def list_cmd():
    """The shipped sets: driver version, suite, and the lists each holds."""
    for s in load_all():
        names = ", ".join(f"{lst.name}({len(lst.ids)})" for lst in s.lists)
        click.echo(f"{s.driver_version:<12} {s.package_version:<16} {s.suite:<9} {names}")


@command.command("check")
def check():
    """Where the catalog's branch range/flavours and the shipped lists disagree (selection follows the lists)."""
    from validator.catalog import load_catalog
    from validator.selection import catalog_vs_lists

    rows = catalog_vs_lists(load_catalog(), load_all())
    for d in rows:
        verdict = "supports" if d.list_says else "does NOT support"
        click.echo(f"{d.driver_version:<11} {d.list_name + '.ids':<28} {verdict:<16} {d.model:<16} (catalog alone would say {'yes' if d.catalog_says else 'no'})")
    click.echo(f"{len(rows)} disagreement(s); the lists win.")


@command.command("show")
@click.argument("driver_version")
@click.argument("list_name", default="nvidia")
def show(driver_version, list_name):
    """Print the PCI IDs of one list (default: nvidia) of a shipped driver version."""
    s = require_set(driver_version)
    lst = s.get(list_name)
    if lst is None:
        from validator.errors import UserError

        raise UserError(f"{driver_version} has no list {list_name!r}", hint="lists: " + ", ".join(x.name for x in s.lists))
    for i in sorted(lst.ids):
        click.echo(f"10de:{i:04x}")
