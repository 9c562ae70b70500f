"""`gpu-validate fleet DIR`: many hosts' JSON reports as one host x check table and one HTML page."""

from __future__ import annotations

import sys

import click

from validator.atomic import check_writable, write_text
from validator.report.fleet import load_fleet, render_fleet


@click.command(name="fleet")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(("text", "json", "html")), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically) instead of stdout.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the HTML page here.")
def command(directory, fmt, output, html_path):
    """Merge the JSON reports under DIR (one a host). Exit 0 all pass, 1 any host failed, 3 warnings only."""
    for p in (html_path, output):
        if p:
            check_writable(p)
    fleet = load_fleet(directory)
    if html_path:
        write_text(html_path, render_fleet(fleet, "html"))
    text = render_fleet(fleet, fmt)
    if output:
        write_text(output, text)
    else:
        click.echo(text, nl=False)
    sys.exit(fleet.exit_code)
