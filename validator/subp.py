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


# Seconds to wait for a killed child's exit and its last output before giving up on it.
KILL_GRACE_S = 10.0


def _reap(proc: subprocess.Popen):
    """Kill a child and collect what it wrote, waiting at most `grace` seconds: a process stuck in the kernel
    (nvidia-smi on a GPU that fell off the bus) ignores SIGKILL, and subprocess.run would wait for it forever.
    Returns (None, None) when it is still there."""
    proc.kill()
    try:
        return proc.communicate(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        return None, None


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
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            errors="replace",
            env=full_env,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise ToolMissing(argv) from None
    except OSError as e:  # not executable, a folder, a bad ELF: the command cannot start at all
        raise CommandError(argv, None, reason=f"cannot start {argv[0]}: {e.strerror or e}") from None
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        reason = f"timed out after {timeout}s"
        out, err = _reap(proc)
        if out is None:
            reason += "; still running after SIGKILL (blocked in the kernel: a hung driver?)"
        raise CommandError(argv, None, out or "", err or "", reason=reason) from None
    except BaseException:  # Ctrl-C, SIGTERM turned into an exception: never leave the child behind
        _reap(proc)
        raise
    result = CmdResult(tuple(argv), proc.returncode, out or "", err or "")
    if check and proc.returncode not in set(ok_codes):
        raise CommandError(argv, proc.returncode, result.stdout, result.stderr)
    return result


class Background:
    """A process that runs while we do something else (a benchmark server waiting for its client): output to a
    temporary file, stdin from /dev/null; `wait(timeout)` or `stop()` ends it and returns a CmdResult."""

    def __init__(self, argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None):
        import tempfile

        self.argv = [str(a) for a in argv]
        log.debug("start: %s", shlex.join(self.argv))
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        self._out = tempfile.TemporaryFile(mode="w+", errors="replace")
        self._res: Optional[CmdResult] = None
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                          stderr=subprocess.STDOUT, text=True, env=full_env)
        except FileNotFoundError:
            self._out.close()
            raise ToolMissing(self.argv) from None

    def _result(self) -> CmdResult:
        if self._res is None:
            self._out.seek(0)
            self._res = CmdResult(tuple(self.argv), self._proc.returncode, self._out.read(), "")
            self._out.close()
        return self._res

    def running(self) -> bool:
        return self._proc.poll() is None

    def wait(self, timeout: float) -> CmdResult:
        """Its result once it exits; CommandError (timed out) after killing it when it outlasts timeout."""
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            res = self.stop()
            raise CommandError(self.argv, None, res.stdout, "", reason=f"timed out after {timeout}s") from None
        return self._result()

    def stop(self, grace: float = 5.0) -> CmdResult:
        """Terminate (then kill) if still running; its output so far."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._result()
