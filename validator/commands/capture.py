"""`gpu-validate capture DIR`: snapshot this node (files + command outputs) for `gpu-validate run --root DIR`."""

from __future__ import annotations

import click

from validator.capture import capture


@click.command(name="capture")
@click.argument("directory", type=click.Path(exists=False))
@click.option("--no-commands", is_flag=True, help="Only copy files; run no command (nvidia-smi, dmesg, ...).")
def command(directory, no_commands):
    """Capture this node into DIRECTORY (created atomically) in the layout the validator replays."""
    dest = capture(directory, run_commands=not no_commands)
    click.echo(f"captured {dest}; replay with: gpu-validate run --root {dest}")
