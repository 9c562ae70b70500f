"""One lock for the builder: an flock on a file that records its holder's pid (dist/.lock, an image's lock)."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Optional

from validator.errors import UserError

log = logging.getLogger("gpuforge.lock")


class FileLock:
    """`with FileLock(dist / ".lock"):` two builders on one output take turns instead of interleaving files.

    wait=False raises UserError naming the holder instead of waiting.
    """

    def __init__(self, path: Path, wait: bool = True, what: Optional[str] = None):
        self.path = Path(path)
        self.wait = wait
        self.what = what or str(self.path.parent)
        self.fd: Optional[int] = None

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not self.wait:
                os.close(fd)
                raise UserError(f"{self.what} is locked by another build (pid {holder})") from None
            log.warning("waiting for %s (held by pid %s)", self.path, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
