"""gpuforge user-data: the cloud-init user data a golden image boots with (accounts + SSH keys, hostname, expected
GPU inventory, driver method). Every field is checked; bad input exits 2 and writes nothing."""

from __future__ import annotations

import click

from builder.images.userdata import DriverChoice, User, read_key_args, render_user_data
from validator.atomic import write_text
from validator.errors import UserError


@click.command("user-data")
@click.option("--user", "user", default="gpuforge", show_default=True, help="Account to create (sudo, no password).")
@click.option("--ssh-key", "ssh_keys", multiple=True, required=True,
              help="Public key line or a file of them (~/.ssh/id_ed25519.pub); repeatable.")
@click.option("--hostname", default="", help="Host name (RFC 1123).")
@click.option("--expect", default="", help="Expected GPU inventory, e.g. 8xH100 (the first-boot validation uses it).")
@click.option("--driver-method", type=click.Choice(["precompiled", "native", "container"]), default=None,
              help="How the first-boot hook installs the driver (default: the image's precompiled package).")
@click.option("--driver-image", default="", help="Driver container image (with --driver-method container).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically) instead of stdout.")
def command(user, ssh_keys, hostname, expect, driver_method, driver_image, output):
    """Render cloud-init user data for a gpuforge image (NoCloud seed, cloud instance data, PXE)."""
    if driver_image and not driver_method:
        raise UserError("--driver-image needs --driver-method container")
    driver = DriverChoice(driver_method, driver_image) if driver_method else None
    text = render_user_data((User(user, read_key_args(ssh_keys)),), expect=expect, hostname=hostname, driver=driver)
    if output:
        write_text(output, text, 0o600)
    else:
        click.echo(text, nl=False)
