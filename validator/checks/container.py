"""container group: a runtime present, the NVIDIA runtime configured, and (standard) a real `--gpus all` run."""

from __future__ import annotations

import re

from validator.checks.base import Unavailable, check, fail, ok, skip, warn
from validator.checks.context import Context
from validator.errors import CommandError, ConfigError, ToolMissing
from validator.node import NotCaptured
from validator.userfile import parse_json

RUNTIMES = ("docker", "containerd", "podman")
TOOLKIT = ("nvidia-ctk", "nvidia-container-cli", "nvidia-container-runtime")
CDI_SPECS = ("/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml", "/etc/cdi/nvidia.json", "/var/run/cdi/nvidia.json")


def _runtimes(ctx: Context):
    return [r for r in RUNTIMES if ctx.which(r)]


@check("container.runtime", "container", "quick", "Container runtime present")
def runtime(ctx: Context):
    found = _runtimes(ctx)
    if not found and not ctx.node.which_known("docker"):
        return skip("program list not captured in this snapshot (cmd/which.txt)")
    if not found:
        return skip("no container runtime installed (docker, containerd, podman missing)")
    return ok(", ".join(found), "docker, containerd or podman")


def _nvidia_configured(ctx: Context):
    where = []
    daemon = ctx.text_or("/etc/docker/daemon.json")
    if daemon:
        try:
            cfg = parse_json(daemon, "/etc/docker/daemon.json")
        except ConfigError:  # docker itself refuses such a file: no NVIDIA runtime from it
            cfg = None
        if isinstance(cfg, dict) and (
                (isinstance(cfg.get("runtimes"), dict) and "nvidia" in cfg["runtimes"])
                or cfg.get("default-runtime") == "nvidia"):
            where.append("docker daemon.json")
    if re.search(r"nvidia", ctx.text_or("/etc/containerd/config.toml") or ""):
        where.append("containerd config.toml")
    for spec in CDI_SPECS:
        if ctx.node.exists(spec):
            where.append(f"CDI {spec}")
    return where


@check("container.nvidia_runtime", "container", "quick", "NVIDIA container runtime configured")
def nvidia_runtime(ctx: Context):
    if not _runtimes(ctx):
        return skip("no container runtime installed")
    tools = [t for t in TOOLKIT if ctx.which(t)]
    where = _nvidia_configured(ctx)
    observed = f"toolkit: {', '.join(tools) or 'missing'}; configured in: {', '.join(where) or 'nothing'}"
    if tools and where:
        return ok(observed, "NVIDIA Container Toolkit installed and configured")
    return warn(observed, "NVIDIA Container Toolkit installed and configured",
                "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker` "
                "(or generate a CDI spec: nvidia-ctk cdi generate)")


def _cuda_image(ctx: Context):
    """A CUDA-capable image already on the node (never pulled: a validator must not depend on a registry)."""
    if ctx.docker_image:
        return ctx.docker_image
    res = ctx.node.cmd("docker-images.txt", ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=30)
    if res.returncode != 0:
        raise Unavailable(f"docker images failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[:120]}")
    imgs = [l.strip() for l in res.stdout.splitlines() if l.strip() and "<none>" not in l]
    for pat in ("nvidia/cuda", "nvcr.io", "cuda", "pytorch"):
        for i in imgs:
            if pat in i:
                return i
    raise Unavailable("no CUDA image present locally (pre-pull e.g. nvidia/cuda:12.4.1-base-ubuntu22.04 "
                      "or pass --docker-image)")


@check("container.gpu_run", "container", "standard", "Container GPU access (docker run --gpus all)")
def gpu_run(ctx: Context):
    if not ctx.which("docker"):
        return skip("docker not installed")
    if not [t for t in TOOLKIT if ctx.which(t)]:
        return skip("NVIDIA Container Toolkit not installed (see container.nvidia_runtime)")
    try:
        image = _cuda_image(ctx)
    except (NotCaptured, ToolMissing) as e:
        return skip(str(e))
    argv = ["docker", "run", "--rm", "--pull", "never", "--gpus", "all", image, "nvidia-smi", "-L"]
    try:
        res = ctx.node.cmd("docker-run-gpus.txt", argv, timeout=300)
    except (NotCaptured, ToolMissing) as e:
        return skip(str(e))
    except CommandError as e:
        return fail(e.message.splitlines()[0], "the container sees every GPU", "check `docker info` and the NVIDIA runtime")
    seen = len([l for l in res.stdout.splitlines() if l.startswith("GPU ")])
    try:
        want = len(ctx.gpus)
    except Unavailable:
        want = None
    observed = f"{image}: container sees {seen} GPU(s)" + (f" (exit {res.returncode})" if res.returncode else "")
    exp = f"{want} GPU(s)" if want is not None else "at least one GPU"
    if res.returncode != 0 or seen == 0 or (want is not None and seen != want):
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        return fail(observed + (f": {tail[0][:160]}" if res.returncode else ""), exp,
                    "nvidia-ctk runtime configure --runtime=docker && systemctl restart docker")
    return ok(observed, exp)
