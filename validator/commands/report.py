"""`gpu-validate report FILE.json`: re-render a saved report in another format; exit with its verdict as `run`."""

from __future__ import annotations

import sys

import click

from validator.atomic import check_writable, write_text
from validator.clibase import output_options, pick_format
from validator.report.model import load_report
from validator.report.render import FORMATS, render, summary_line, want_colour


@click.command(name="report")
@click.argument("report_file", type=click.Path(dir_okay=False))
@output_options(FORMATS, "term")
@click.option("--exit-status", is_flag=True, hidden=True, help="Accepted for old scripts: the verdict is the exit status.")
def command(report_file, fmt, output, as_json, problems, exit_status):
    """Re-render a saved JSON report (term, text, json, html, junit, prom).

    Exit status as `run`: 0 all pass, 1 any check failed, 3 warnings only, 2 unreadable report or usage error."""
    fmt = pick_format(fmt, as_json, output, FORMATS, "term")
    if output:
        check_writable(output)
    report = load_report(report_file)
    if output:
        write_text(output, render(report, fmt, problems=problems))
        click.echo(summary_line(report), err=True)
    else:
        click.echo(render(report, fmt, colour=fmt == "term" and want_colour(sys.stdout), problems=problems), nl=False)
    sys.exit(report.exit_code)
