"""Write files so a reader never sees half of one: temp name in the same folder, fsync, rename.

A path that cannot be written (a read-only or virtual file system, a parent that is a file, a device, a folder)
is an OutputError naming the path and the OS reason: exit 2, never a traceback, never a half-written file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Union

from validator.errors import UserError


class OutputError(UserError):
    """An output path that cannot be written; names the path and why."""

    def __init__(self, path: Union[str, Path], reason: str, hint: Union[str, None] = None):
        super().__init__(f"{path}: cannot write: {reason}", hint)
        self.path = str(path)
        self.reason = reason


def _why(e: OSError, path: Path) -> str:
    """The OS reason, plus the file it concerns when that is not the output or its temp file (mkdir -p)."""
    reason = e.strerror or str(e)
    f = e.filename if isinstance(e.filename, str) else None
    if f and f != str(path) and os.path.dirname(f) != str(path.parent):
        return f"{reason} ({f})"
    return reason


def _target(path: Path) -> Path:
    """Where the bytes go: through a symlink to its file; a folder, device or FIFO is refused (replacing
    /dev/null or a named pipe with a regular file would break the node)."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except NotADirectoryError:
        raise OutputError(path, f"{_file_in_the_way(path.parent)} is not a folder") from None
    except OSError as e:
        raise OutputError(path, _why(e, path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(path, "it is a folder", hint="give a file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(path, "it is not a regular file (a device, FIFO or socket)",
                          hint="leave out -o to print to standard output")
    return path


def _existing_ancestor(folder: Path) -> Path:
    for p in [folder, *folder.parents]:
        if os.path.lexists(p):
            return p
    return Path("/")


def _file_in_the_way(folder: Path) -> Path:
    """The first part of folder that exists but is not a folder (for 'x.json/out.html' style mistakes)."""
    for p in reversed([folder, *folder.parents]):
        if os.path.lexists(p) and not p.is_dir():
            return p
    return _existing_ancestor(folder)


def make_dirs(folder: Union[str, Path]) -> Path:
    """mkdir -p, or an OutputError that names the part of the path that is in the way."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(folder, f"{_file_in_the_way(folder)} is not a folder") from None
    except OSError as e:
        raise OutputError(folder, _why(e, folder)) from None
    return folder


def check_writable(path: Union[str, Path]) -> None:
    """Before any work: will write_bytes(path) succeed? Refuses folders, devices, a parent that is a file,
    and a first existing ancestor where no file can be created (read-only, /sys, /proc, permissions)."""
    path = _target(Path(path))
    _probe_folder(path, path.parent)


def check_writable_dir(folder: Union[str, Path]) -> None:
    """Before any work: can files be made in folder (made when missing)? Refuses a file, device or symlink loop
    in the way and a first existing ancestor where nothing can be created."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():  # is_dir is False for a symlink loop too
        raise OutputError(folder, "is not a folder")
    _probe_folder(folder, folder)


def _probe_folder(named: Path, folder: Path) -> None:
    """Create and remove a file in the first existing ancestor of folder; errors name `named`."""
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        raise OutputError(named, f"{_file_in_the_way(folder)} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpuforge-probe.", dir=str(anc))
    except OSError as e:
        raise OutputError(named, _why(e, named)) from None
    os.close(fd)
    os.unlink(probe)


def write_bytes(path: Union[str, Path], data: bytes, mode: int = 0o644) -> Path:
    return write_chunks(path, (data,), mode)


def write_chunks(path: Union[str, Path], chunks: Iterable[bytes], mode: int = 0o644) -> Path:
    """Stream chunks (a docker save, a download) into path; an error midway leaves no file behind."""
    path = _target(Path(path))
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as e:
        raise OutputError(path, _why(e, path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise OutputError(path, _why(e, path)) from None
        raise
    return path


def write_text(path: Union[str, Path], text: str, mode: int = 0o644) -> Path:
    # a lone surrogate (undecodable bytes read from a node) cannot be UTF-8: write U+FFFD, never crash
    return write_bytes(path, text.encode("utf-8", errors="replace"), mode)
