"""`gpu-validate setup runtime`: Docker, the NVIDIA Container Toolkit, and the NVIDIA runtime in daemon.json.

daemon.json is merged the way `nvidia-ctk runtime configure --runtime=docker` does it (NVIDIA/nvidia-container-toolkit,
pkg/config/engine/docker): `runtimes.nvidia = {"path": "nvidia-container-runtime", "args": []}`, optionally
`default-runtime: nvidia`, every other key the operator wrote kept as it was.
"""

from __future__ import annotations

import json
from typing import Optional

from validator.errors import UserError
from validator.setup import apt
from validator.setup.plan import Host, Plan, run, write

RUNTIME_NAME = "nvidia"


def merge_daemon_json(text: Optional[str], runtime_path: str, set_default: bool, source: str) -> dict:
    """The daemon.json content with the NVIDIA runtime registered; an unreadable file is never overwritten."""
    cfg: dict = {}
    if text is not None and text.strip():
        try:
            cfg = json.loads(text)
        except ValueError as e:
            raise UserError(f"{source}: not valid JSON ({e}); fix it by hand: gpuforge never overwrites an operator's file") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{source}: expected a JSON object at the top, got {type(cfg).__name__}")
    runtimes = cfg.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise UserError(f"{source}: runtimes: expected a JSON object, got {type(runtimes).__name__}")
    merged = dict(cfg)
    merged["runtimes"] = dict(runtimes, **{RUNTIME_NAME: {"path": runtime_path, "args": []}})
    if set_default:
        merged["default-runtime"] = RUNTIME_NAME
    return merged


def daemon_json_text(cfg: dict) -> str:
    return json.dumps(cfg, indent=4) + "\n"  # nvidia-ctk writes 4-space indented JSON too


def plan_runtime(host: Host, repos: apt.Repos, *, toolkit: bool, set_default: bool, gpus_on_pci: int) -> Plan:
    """Docker packages, then (toolkit wanted) NVIDIA's repository, the toolkit and the daemon.json entry."""
    actions, notes = [], []
    have = apt.installed(host)
    engines = [p for p in ("docker.io", "docker-ce", "moby-engine") if p in have]
    if not engines:
        actions.append(apt.apt_install(repos.docker_packages, "container engine"))
    if not toolkit:
        notes.append("NVIDIA Container Toolkit not requested" + (" (no NVIDIA GPU on PCI)" if gpus_on_pci == 0 else ""))
        return Plan("runtime", tuple(actions), (), tuple(notes))
    tk_pkgs = tuple(repos.toolkit["packages"])
    todo = apt.missing(have, tk_pkgs)
    if todo:
        repo = apt.repo_from(repos.toolkit, "NVIDIA Container Toolkit", arch="amd64")
        # Repository first: an unreachable one fails before any package changes.
        actions[:0] = apt.plan_repo(host, repo)
        actions.append(apt.apt_install(todo, "NVIDIA Container Toolkit"))
    current = host.read(repos.daemon_json)
    merged = merge_daemon_json(current, repos.runtime_path, set_default, repos.daemon_json)
    try:
        same = current is not None and json.loads(current) == merged
    except ValueError:
        same = False
    if not same:
        actions.append(write(repos.daemon_json, daemon_json_text(merged), why="register the nvidia runtime"))
        if host.path("/run/systemd/system").is_dir():
            actions.append(run(["systemctl", "restart", "docker"], "load the runtime", 300))
        else:
            notes.append("no systemd here: restart dockerd to load the nvidia runtime")
    return Plan("runtime", tuple(actions), (), tuple(notes))
