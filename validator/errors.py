"""Typed errors; the CLIs turn them into exit codes (2 for user mistakes)."""

from __future__ import annotations

from typing import Optional


class GpuforgeError(Exception):
    """Base of every error gpuforge raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(GpuforgeError):
    """Bad input from the user (a file, a field, a flag): exit status 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config/catalog file with a wrong field: names the file, the key path and what was expected."""

    def __init__(self, path: str, key: str, expected: str, got: object = None, hint: Optional[str] = None):
        got_s = "" if got is None else f", got {_short_repr(got)}"
        super().__init__(f"{path}: {key}: expected {expected}{got_s}", hint)
        self.path = path
        self.key = key
        self.expected = expected


def _short_repr(value: object, limit: int = 200) -> str:
    """repr() cut to a line's worth: a bad value may be a megabyte string or a list of a million items."""
    try:
        text = repr(value) if not isinstance(value, (list, dict, tuple, set)) or len(value) <= 50 else \
            f"{type(value).__name__} of {len(value)} items"
    except RecursionError:  # a self-referencing structure
        text = f"a self-referencing {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


class CommandError(GpuforgeError):
    """An external command failed: carries the argv, the exit status and the tail of its output."""

    def __init__(self, argv: list, returncode: Optional[int], stdout: str = "", stderr: str = "", reason: str = ""):
        import shlex

        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = "\n".join((stderr or stdout or "").strip().splitlines()[-15:])
        what = reason or f"exit status {returncode}"
        msg = f"command failed ({what}): {shlex.join(str(a) for a in self.argv)}"
        if tail:
            msg += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        super().__init__(msg, hint=f"reproduce with: {shlex.join(str(a) for a in self.argv)}")


class ToolMissing(CommandError):
    """The program to run is not installed: a node lacking a tool is not a node lacking a GPU."""

    def __init__(self, argv: list):
        super().__init__(argv, None, reason=f"{argv[0]} not found")
