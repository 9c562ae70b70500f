"""The one place that runs external commands (after mkosi run.py / cloud-init subp.py)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from validator.errors import CommandError, ToolMissing

log = logging.getLogger("gpuforge.subp")


@dataclass(frozen=True)
class CmdResult:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    timeout: Optional[float] = 600,
    ok_codes: Iterable[int] = (0,),
    input: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    check: bool = True,
    capture: bool = True,
) -> CmdResult:
    """Run argv (no shell), log it, capture output, enforce a timeout; raise CommandError unless rc is in ok_codes."""
    argv = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(argv))
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            errors="replace",
            timeout=timeout,
            env=full_env,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise ToolMissing(argv) from None
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise CommandError(argv, None, out, err, reason=f"timed out after {timeout}s") from None
    result = CmdResult(tuple(argv), proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and proc.returncode not in set(ok_codes):
        raise CommandError(argv, proc.returncode, result.stdout, result.stderr)
    return result
