"""`gpu-validate report FILE.json`: re-render a saved report in another format."""

from __future__ import annotations

import sys

import click

from validator.atomic import check_writable, write_text
from validator.report.model import load_report
from validator.report.render import FORMATS, render, want_colour


@click.command(name="report")
@click.argument("report_file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="term", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically) instead of stdout.")
@click.option("--exit-status", is_flag=True, help="Exit with the report's status (0 pass, 1 fail, 3 warn).")
def command(report_file, fmt, output, exit_status):
    """Re-render a saved JSON report (term, text, json, html, junit, prom)."""
    if output:
        check_writable(output)
    report = load_report(report_file)
    if output:
        write_text(output, render(report, fmt))
    else:
        click.echo(render(report, fmt, colour=fmt == "term" and want_colour(sys.stdout)), nl=False)
    sys.exit(report.exit_code if exit_status else 0)
