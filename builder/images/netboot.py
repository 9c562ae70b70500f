"""Netboot bundle: vmlinuz, initrd.img, root.squashfs and boot.ipxe (iPXE loads all three over TFTP/HTTP).

iPXE hands the squashfs to the kernel as a second initramfs member named /gpuforge-root.squashfs (iPXE writes the cpio header); the
initramfs script `gpuforge` (boot=gpuforge, baked by the stage) mounts it under a tmpfs overlay. No network
code runs in the initramfs, so TFTP (qemu, PXE farms) and HTTP work alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from validator import subp
from validator.atomic import write_text

SQUASHFS = "root.squashfs"


def boot_ipxe(cmdline: str, base_url: str = "") -> str:
    """The iPXE script; base_url empty = same server and folder the script came from."""
    b = base_url.rstrip("/") + "/" if base_url else ""
    return (
        "#!ipxe\n"
        "# gpuforge netboot: kernel command line = console + tuning profile (same flags as the disk's grub.cfg)\n"
        f"kernel {b}vmlinuz initrd=initrd.img boot=gpuforge {cmdline}\n"
        f"initrd {b}initrd.img\n"
        f"initrd {b}{SQUASHFS} gpuforge-{SQUASHFS}\n"
        "boot\n"
    )


def build_bundle(rootfs: Path, abi: str, cmdline: str, out: Path) -> None:
    shutil.copy2(rootfs / "boot" / f"vmlinuz-{abi}", out / "vmlinuz")
    shutil.copy2(rootfs / "boot" / f"initrd.img-{abi}", out / "initrd.img")
    tmp = out / f".{SQUASHFS}.tmp"
    tmp.unlink(missing_ok=True)
    # /boot is not needed once iPXE has the kernel; zstd decompresses fast under TCG and on real nodes.
    subp.run(["mksquashfs", str(rootfs), str(tmp), "-comp", "zstd", "-Xcompression-level", "15", "-noappend",
              "-quiet", "-no-progress", "-processors", "2", "-e", "boot"], timeout=1800)
    tmp.rename(out / SQUASHFS)
    write_text(out / "boot.ipxe", boot_ipxe(cmdline))
