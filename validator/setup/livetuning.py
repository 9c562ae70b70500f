"""`gpu-validate setup tuning`: the tuning profile the builder bakes into images, applied to a running node.

The files are the builder's own (validator.setup.nodefiles); settings that can change now are applied now
(sysctl, THP, governor, C-states through the same apply-tuning script the boot unit runs), the kernel command
line goes into the boot configuration and is reported as needing a reboot.
"""

from __future__ import annotations

import glob
import hashlib
import re
from pathlib import Path
from typing import Optional

from validator.errors import GpuforgeError, UserError
from validator.setup import bootcfg
from validator.setup.nodefiles import (APPLY_SCRIPT_PATH, SYSCTL_PATH, TUNING_UNIT_NAME, TUNING_UNIT_PATH,
                                       tuning_files)
from validator.setup.plan import Host, Plan, run, write
from validator.tuning import NODE_PROFILE_PATH, TuningProfile, load_profile

UNIT_WANTS = f"/etc/systemd/system/multi-user.target.wants/{TUNING_UNIT_NAME}"


def _writable(host: Host, abs_path: str) -> bool:
    return host.writable(host.path(abs_path))


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _live_sysctl(host: Host, p: TuningProfile) -> tuple:
    """(differing keys that can be set now, differing keys that cannot: read-only /proc/sys, e.g. a container)."""
    now, later = [], []
    for k, v in p.sysctl:
        cur = host.read(_sysctl_path(k))
        if cur is None or " ".join(cur.split()) == " ".join(str(v).split()):
            continue  # absent on this kernel (reported by the validator), or already in effect
        (now if _writable(host, _sysctl_path(k)) else later).append(f"{k}={cur.strip()}->{v}")
    return now, later


def _thp_mode(text: Optional[str]) -> Optional[str]:
    m = re.search(r"\[(\w+)\]", text or "")
    return m.group(1) if m else None


def _live_knobs(host: Host, p: TuningProfile) -> tuple:
    """Knobs apply-tuning sets (governor, THP, C-states, turbo) that differ now: (settable, read-only)."""
    now, later = [], []

    def judge(path: str, ok: bool, what: str):
        if not ok:
            (now if _writable(host, path) else later).append(what)

    root = str(host.root).rstrip("/")
    rel = lambda full: full[len(root):] if root else full  # noqa: E731
    if p.memory.transparent_hugepage:
        path = "/sys/kernel/mm/transparent_hugepage/enabled"
        cur = _thp_mode(host.read(path))
        if cur is not None:
            judge(path, cur == p.memory.transparent_hugepage, f"THP {cur}->{p.memory.transparent_hugepage}")
    if p.cpu.governor:
        for full in sorted(glob.glob(f"{root}/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")):
            cur = (host.read(rel(full)) or "").strip()
            judge(rel(full), cur == p.cpu.governor, f"governor {cur}->{p.cpu.governor}")
    if p.cpu.max_cstate is not None:
        for full in sorted(glob.glob(f"{root}/sys/devices/system/cpu/cpu[0-9]*/cpuidle/state[0-9]*/disable")):
            n = int(re.search(r"state(\d+)/disable$", full).group(1))
            if n > p.cpu.max_cstate:
                judge(rel(full), (host.read(rel(full)) or "").strip() == "1", f"{rel(full)} -> 1")
    if p.cpu.turbo is not None:
        for path, want in (("/sys/devices/system/cpu/intel_pstate/no_turbo", "0" if p.cpu.turbo else "1"),
                           ("/sys/devices/system/cpu/cpufreq/boost", "1" if p.cpu.turbo else "0")):
            cur = host.read(path)
            if cur is not None:
                judge(path, cur.strip() == want, f"{path} {cur.strip()}->{want}")
    return list(dict.fromkeys(now)), list(dict.fromkeys(later))


def _old_profile(host: Host) -> Optional[TuningProfile]:
    """The profile this node was tuned with before (its flags are replaced, not kept next to the new ones)."""
    if host.read(NODE_PROFILE_PATH) is None:
        return None
    try:
        return load_profile(host.path(NODE_PROFILE_PATH))
    except GpuforgeError:
        return None


def profile_text(p: TuningProfile) -> str:
    try:
        return Path(p.source).read_text()
    except OSError as e:
        raise UserError(f"{p.source}: cannot read tuning profile ({e.strerror or e})") from None


def plan_tuning(host: Host, p: TuningProfile, text: str) -> Plan:
    """Files (as the image builder writes them), live settings, boot configuration; reboot when the running
    kernel's command line lacks a profile flag."""
    actions, notes, reboot = [], [], []
    sha = hashlib.sha256(text.encode()).hexdigest()
    files = tuning_files(p, text, sha)
    changed = {path for path, (body, _) in files.items() if host.read(path) != body}
    for path, (body, mode) in files.items():
        if path in changed:
            actions.append(write(path, body, mode))
    if not any(host.path(p).exists() for p in ("/bin/systemctl", "/usr/bin/systemctl")):
        notes.append(f"no systemctl here: {TUNING_UNIT_NAME} written but not enabled")
    else:
        if TUNING_UNIT_PATH in changed and host.path("/run/systemd/system").is_dir():
            actions.append(run(["systemctl", "daemon-reload"], "new unit file", 60))
        if not host.path(UNIT_WANTS).exists():
            actions.append(run(["systemctl", "enable", TUNING_UNIT_NAME], "apply at every boot", 60))

    sysctl_now, sysctl_later = _live_sysctl(host, p)
    if sysctl_now:
        actions.append(run(["sysctl", "-e", "-q", "-p", SYSCTL_PATH], "now: " + ", ".join(sysctl_now), 60))
    if sysctl_later:
        notes.append("read-only here, in effect from the next boot: " + ", ".join(sysctl_later))
    knobs_now, knobs_later = _live_knobs(host, p)
    if knobs_now:
        actions.append(run([APPLY_SCRIPT_PATH], "now: " + ", ".join(knobs_now[:4]) +
                           (f" (+{len(knobs_now) - 4})" if len(knobs_now) > 4 else ""), 60))
    if knobs_later:
        notes.append("read-only here: " + ", ".join(knobs_later[:4]))
    if p.memory.swap is False and len((host.read("/proc/swaps") or "").strip().splitlines()) > 1:
        actions.append(run(["swapoff", "-a"], "the profile wants swap off", 300))
        notes.append("swap is off now; remove swap entries from /etc/fstab or it comes back at boot")

    old = _old_profile(host)
    boot = bootcfg.plan_cmdline(host, p.cmdline, old.cmdline if old else ())
    actions += boot.actions
    notes += boot.notes
    running = (host.read("/proc/cmdline") or "").split()
    missing = [f for f in p.cmdline if f not in running]
    if missing and boot.where:
        reboot.append(f"kernel command line lacks {' '.join(missing)} (set in {boot.where})")
    return Plan("tuning", tuple(actions), tuple(reboot), tuple(notes))


def load_for_setup(host: Host, name_or_path: Optional[str]) -> TuningProfile:
    """--profile NAME|FILE, else the node's /etc/gpuforge/tuning.yaml, else the packaged default (like `run`)."""
    from validator.tuning import resolve_profile

    return resolve_profile(host.root, name_or_path)

