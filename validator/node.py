"""One interface to read a node: files under a root directory and commands, live or replayed from a snapshot."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

from validator import subp, userfile
from validator.errors import CommandError, ConfigError, GpuforgeError, ToolMissing
from validator.subp import CmdResult

_RAISE = object()
# How a capture script records "the program is not installed" (timeout(1)/sh exit 127).
_NOT_FOUND_RE = re.compile(r"(failed to run command|command not found|No such file or directory)", re.I)
# A node file (sysfs, procfs, /etc) or a recorded command output larger than this is not one: stop reading.
MAX_FILE_BYTES = 16 << 20
MAX_CMD_BYTES = 64 << 20


def read_bounded(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A regular file's text (undecodable bytes replaced), at most max_bytes; a FIFO, device or folder is
    refused without blocking. Raises ConfigError (from validator.userfile) naming the file and why."""
    return userfile.read_bytes(path, "file", max_bytes).decode("utf-8", errors="replace")


class NodeReadError(GpuforgeError):
    """A file on the node could not be read: checks turn this into `skip` with the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class NotCaptured(ToolMissing):
    """A replayed command whose output the snapshot does not hold."""

    def __init__(self, name: str, argv: Sequence[str]):
        super().__init__(list(argv) or [name])
        self.message = f"{name} not captured in this snapshot"
        self.name = name

    def __str__(self) -> str:
        return self.message


Runner = Callable[[str, Sequence[str], Optional[float]], CmdResult]


def live_runner(name: str, argv: Sequence[str], timeout: Optional[float] = 30) -> CmdResult:
    """Run argv for real through validator.subp (any exit status is returned, not raised)."""
    return subp.run(argv, timeout=timeout, check=False)


class ReplayRunner:
    """Answer commands from a snapshot's cmd/NAME (stdout) and cmd/NAME.rc ("rc=N" or "N")."""

    def __init__(self, cmd_dir: Path):
        self.cmd_dir = Path(cmd_dir)

    def __call__(self, name: str, argv: Sequence[str], timeout: Optional[float] = None) -> CmdResult:
        out_path = self.cmd_dir / name
        if not out_path.is_file():
            raise NotCaptured(name, argv)
        try:
            out = read_bounded(out_path, MAX_CMD_BYTES)
            rc_text = read_bounded(self.cmd_dir / (name + ".rc"), 4096) if (self.cmd_dir / (name + ".rc")).is_file() else ""
        except ConfigError as e:  # a snapshot whose recording is a FIFO, gigabytes, ...: as if not recorded
            raise NotCaptured(name, argv) from e
        m = re.search(r"-?\d{1,6}", rc_text)
        rc = int(m.group(0)) if m else 0
        if rc in (126, 127) and (_NOT_FOUND_RE.search(out) or not out.strip()):
            raise ToolMissing(list(argv) or [name])
        return CmdResult(tuple(argv), rc, out, "")


class Node:
    """A node seen through a root directory (`/` live, a snapshot in tests) and a command runner."""

    def __init__(self, root: Union[str, Path] = "/", runner: Optional[Runner] = None, live: Optional[bool] = None):
        self.root = Path(root)
        self.runner: Runner = runner or live_runner
        # live = commands really run here (NVML, CUDA child, docker are allowed)
        self.live = (self.runner is live_runner) if live is None else live
        self._which_cache: Optional[dict] = None

    @classmethod
    def open(cls, root: Union[str, Path] = "/") -> "Node":
        """`/` is the live node; any other root is a snapshot whose commands replay from its cmd/ folder
        (a root without one, e.g. a mounted image, runs no command: the host's tools would describe the host)."""
        root = Path(root)
        if root.resolve() != Path("/"):
            return cls(root, ReplayRunner(root / "cmd"), live=False)
        return cls(root, live_runner, live=True)

    # ---- files -------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def read_text(self, rel: str, default=_RAISE) -> str:
        """File text, or `default`; without a default raise NodeReadError naming the file."""
        try:
            return read_bounded(self.path(rel))
        except ConfigError as e:
            if default is not _RAISE:
                return default
            reason = getattr(e, "reason", None) or e.message
            reason = "not present" if reason == "No such file or directory" else reason
            raise NodeReadError("/" + rel.lstrip("/"), reason) from None

    def read_int(self, rel: str, default=_RAISE) -> int:
        """A sysfs/procfs integer (decimal or 0x hex)."""
        text = self.read_text(rel, None if default is not _RAISE else _RAISE)
        if text is None:
            return default
        try:
            return int(text.strip().split()[0], 0)
        except (ValueError, IndexError):
            if default is not _RAISE:
                return default
            raise NodeReadError("/" + rel.lstrip("/"), f"expected an integer, got {text.strip()[:40]!r}") from None

    def listdir(self, rel: str, default=_RAISE) -> List[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError as e:
            if default is not _RAISE:
                return default
            raise NodeReadError("/" + rel.lstrip("/"), "not present" if isinstance(e, FileNotFoundError) else str(e)) from None

    def glob(self, pattern: str) -> List[str]:
        """Paths (relative to root, with a leading /) matching pattern."""
        return sorted("/" + str(p.relative_to(self.root)) for p in self.root.glob(pattern.lstrip("/")))

    # ---- commands ----------------------------------------------------------------------------
    def cmd(self, name: str, argv: Sequence[str], timeout: Optional[float] = 30) -> CmdResult:
        """Run (or replay) a command; raises ToolMissing when the program is absent, never returns 'no GPU'."""
        return self.runner(name, list(argv), timeout)

    def cmd_ok(self, name: str, argv: Sequence[str], timeout: Optional[float] = 30) -> str:
        """stdout of a command that must succeed; CommandError otherwise."""
        res = self.cmd(name, argv, timeout)
        if res.returncode != 0:
            raise CommandError(list(argv), res.returncode, res.stdout, res.stderr)
        return res.stdout

    def which(self, tool: str) -> Optional[str]:
        """Path of a program on the node (live: PATH lookup; snapshot: cmd/which.txt), None if missing."""
        if self.live:
            return shutil.which(tool) or next(
                (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}", f"/usr/local/bin/{tool}") if os.access(p, os.X_OK)),
                None,
            )
        if self._which_cache is None:
            self._which_cache = {}
            try:
                text = self.runner("which.txt", ["which"], None).stdout
            except (ToolMissing, CommandError):
                text = ""
            for line in text.splitlines():
                key, _, val = line.partition(":")
                val = val.strip()
                if key.strip():
                    self._which_cache[key.strip()] = None if val in ("", "missing") else val
        return self._which_cache.get(tool)

    def which_known(self, tool: str) -> bool:
        """True when a snapshot recorded whether `tool` exists (live nodes always know)."""
        if self.live:
            return True
        self.which(tool)
        return tool in (self._which_cache or {})
