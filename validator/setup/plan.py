"""Node set-up as data: a planner reads the node and returns a Plan (what to change); apply() is the only side effect.

Planners are pure functions of what was read, so `--check` is the same code minus apply(), and a node already in
the wanted state plans nothing (idempotence is "the plan is empty", not a promise of each step).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from validator import atomic, subp, userfile
from validator.errors import ConfigError, GpuforgeError

Runner = Callable[..., subp.CmdResult]
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class Action:
    """One change: write or remove a file, fetch a URL to a file, run a command, or call a node-package function."""

    kind: str  # write | remove | fetch | run | call
    summary: str  # one line for the operator ("write /etc/sysctl.d/90-gpuforge.conf")
    path: str = ""  # absolute node path (write/remove/fetch)
    text: str = ""  # write: content
    mode: int = 0o644
    url: str = ""  # fetch
    argv: Tuple[str, ...] = ()  # run
    timeout: float = 600
    env: Tuple[Tuple[str, str], ...] = ()
    call: Optional[Callable[["Host"], object]] = field(default=None, compare=False)  # call: in-process step

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "summary": self.summary}
        if self.path:
            d["path"] = self.path
        if self.argv:
            d["argv"] = list(self.argv)
        if self.url:
            d["url"] = self.url
        return d


def write(path: str, text: str, mode: int = 0o644, why: str = "") -> Action:
    return Action("write", f"write {path}" + (f" ({why})" if why else ""), path=path, text=text, mode=mode)


def remove(path: str, why: str = "") -> Action:
    return Action("remove", f"remove {path}" + (f" ({why})" if why else ""), path=path)


def fetch(url: str, path: str, why: str = "") -> Action:
    return Action("fetch", f"download {url} -> {path}" + (f" ({why})" if why else ""), path=path, url=url)


def call(fn: Callable[["Host"], object], summary: str) -> Action:
    """A step that is already a node-package function (precompiled install, driver container start)."""
    return Action("call", summary, call=fn)


def run(argv: Sequence[str], why: str = "", timeout: float = 600, apt: bool = False) -> Action:
    cmd = " ".join(argv)
    return Action("run", cmd + (f"  # {why}" if why else ""), argv=tuple(argv), timeout=timeout,
                  env=tuple(APT_ENV.items()) if apt else ())


@dataclass(frozen=True)
class Plan:
    """What one component would change on this node, and why nothing else is needed."""

    component: str
    actions: Tuple[Action, ...] = ()
    reboot: Tuple[str, ...] = ()  # reasons a reboot is needed before the change is in effect
    notes: Tuple[str, ...] = ()  # facts the operator should see (already in place, skipped steps)
    skipped: str = ""  # non-empty: the whole component does not apply to this node (and why)

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    def to_dict(self, applied: bool) -> dict:
        return {"component": self.component, "changed": self.changes, "applied": applied and self.changes,
                "actions": [a.to_dict() for a in self.actions], "reboot_required": bool(self.reboot),
                "reboot_reasons": list(self.reboot), "notes": list(self.notes), "skipped": self.skipped or None}


@dataclass
class Host:
    """Where actions land: a root directory (`/` live; a folder in tests) and the one process runner."""

    root: Path = Path("/")
    run: Runner = subp.run
    writable: Callable[[Path], bool] = lambda p: os.access(p, os.W_OK)  # read-only /proc/sys in a container
    log: List[str] = field(default_factory=list)

    def path(self, abs_path: str) -> Path:
        return self.root / abs_path.lstrip("/")

    def read(self, abs_path: str) -> Optional[str]:
        """A node file's text, None when absent or unreadable (planners treat both as 'not there yet'); a FIFO or
        a file of gigabytes where a config file belongs is unreadable, never a hang."""
        try:
            return userfile.read_bytes(self.path(abs_path), "node file").decode("utf-8", errors="replace")
        except ConfigError:
            return None


FETCH_TIMEOUT_S = 20


def download(url: str, timeout: float = FETCH_TIMEOUT_S, limit: int = 4 << 20) -> bytes:
    """A small file (keyrings) over HTTP(S); an unreachable repository is a clear error, not a hang."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (URLs come from the repos data file)
            data = r.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise GpuforgeError(f"{url} is unreachable ({reason})",
                            hint="is the repository reachable from this node? point the repos data at a mirror") from None
    if len(data) > limit:
        raise GpuforgeError(f"{url}: more than {limit} bytes, not a keyring")
    return data


def apply(plan: Plan, host: Host, fetcher: Callable[[str], bytes] = download) -> List[str]:
    """Carry out the plan's actions in order; the first failure raises (later actions are not attempted)."""
    done = []
    for a in plan.actions:
        t0 = time.monotonic()
        if a.kind == "write":
            atomic.write_text(host.path(a.path), a.text, a.mode)
        elif a.kind == "remove":
            host.path(a.path).unlink(missing_ok=True)
        elif a.kind == "fetch":
            atomic.write_bytes(host.path(a.path), fetcher(a.url))
        elif a.kind == "run":
            host.run(list(a.argv), timeout=a.timeout, env=dict(a.env) if a.env else None)
        elif a.kind == "call" and a.call is not None:
            a.call(host)
        else:
            raise GpuforgeError(f"unknown action kind {a.kind!r}")
        done.append(f"{a.summary} ({time.monotonic() - t0:.1f}s)")
        host.log.append(done[-1])
    return done


def render(plan: Plan, applied: bool) -> str:
    """Human text: what changed (or would), what needs a reboot, notes."""
    verb = "changed" if applied else "would change"
    lines = []
    if plan.skipped:
        lines.append(f"{plan.component}: skipped: {plan.skipped}")
    elif not plan.actions:
        lines.append(f"{plan.component}: nothing to change")
    else:
        lines.append(f"{plan.component}: {verb} ({len(plan.actions)} step{'s' if len(plan.actions) != 1 else ''})")
        lines += [f"  - {a.summary}" for a in plan.actions]
    lines += [f"  note: {n}" for n in plan.notes]
    lines += [f"  reboot needed: {r}" for r in plan.reboot]
    return "\n".join(lines)


def to_json(plans: Sequence[Plan], applied: bool) -> str:
    return json.dumps({"changed": any(p.changes for p in plans), "applied": applied,
                       "reboot_required": any(p.reboot for p in plans),
                       "components": [p.to_dict(applied) for p in plans]}, indent=2)


def is_root_live(root: Path) -> bool:
    return Path(root).resolve() == Path("/") and os.geteuid() == 0
