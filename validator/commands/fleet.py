"""`gpu-validate fleet DIR`: many hosts' JSON reports as one host x check table and one HTML page."""

from __future__ import annotations

import sys

import click

from validator.atomic import check_writable, write_text
from validator.clibase import output_options, pick_format
from validator.report.fleet import FLEET_FORMATS, load_fleet, render_fleet


@click.command(name="fleet")
@click.argument("directory", type=click.Path(file_okay=False))
@output_options(FLEET_FORMATS, "text")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the HTML page here.")
def command(directory, fmt, output, as_json, problems, html_path):
    """Merge the JSON reports under DIR (one a host).

    Exit status as `run`: 0 all pass, 1 any host failed (or a report unreadable), 3 warnings only, 2 usage error."""
    fmt = pick_format(fmt, as_json, output, FLEET_FORMATS, "text")
    for p in (html_path, output):
        if p:
            check_writable(p)
    fleet = load_fleet(directory)
    if html_path:
        write_text(html_path, render_fleet(fleet, "html", problems=problems))
    text = render_fleet(fleet, fmt, problems=problems)
    if output:
        write_text(output, text)
    else:
        click.echo(text, nl=False)
    sys.exit(fleet.exit_code)
