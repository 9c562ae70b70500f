"""Write files so a reader never sees half of one: temp name in the same folder, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_bytes(path: Union[str, Path], data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: Union[str, Path], text: str, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode)
