"""The driver-container install method on a node: pull the image, refuse one built for another kernel (naming the
tag that fits), run it with the flags it needs, and wait for its ready file or its exit, whose message is passed on.

    argv = run_argv("127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-6.1.0-54-cloud-amd64-debian12")
    result = install(image)        # ContainerInstall(state="ready", ...) or a GpuforgeError saying why not

The image's entrypoint (drivers/container/gpuforge-driver) does the loading; this module only starts it right.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from validator import subp, userfile
from validator.errors import CommandError, ConfigError, GpuforgeError, UserError

log = logging.getLogger("gpuforge.driver_container")
NAME = "gpuforge-driver"
READY = "run/nvidia/validations/.driver-ctr-ready"
STATE = "run/nvidia/gpuforge-driver.json"
LABEL = "io.gpuforge."
# The entrypoint's exit codes (drivers/container/gpuforge-driver) and what they mean for an operator.
EXIT_STATES = {3: "locked", 4: "kernel-mismatch", 5: "secure-boot", 6: "in-use", 7: "no-gpu", 143: "stopped"}
Runner = Callable[..., subp.CmdResult]


class ContainerFailed(GpuforgeError):
    """The driver container ended without loading the driver; state is the entrypoint's (no-gpu, in-use, ...)."""

    def __init__(self, state: str, message: str, hint: Optional[str] = None):
        super().__init__(f"driver container: {state}: {message}", hint)
        self.state = state


@dataclass(frozen=True)
class ContainerInstall:
    image: str
    container: str
    driver: str
    kernel: str
    state: str
    ready: bool
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def run_argv(image: str, *, name: str = NAME, peermem: bool = False, restart: str = "unless-stopped") -> list:
    """The exact `docker run`: privileged (modprobe, mounts), host PID (it sees and stops the host's GPU users and
    persistenced), /run/nvidia shared both ways (driver root and ready file reach the host), the host's modules
    read-only (dependencies such as ib_core for nvidia-peermem), no network (it needs none), restarted after a
    reboot."""
    argv = ["docker", "run", "-d", "--name", name, "--privileged", "--pid=host", "--network=none",
            f"--restart={restart}", "--stop-timeout", "120", "-v", "/run/nvidia:/run/nvidia:rshared",
            "-v", "/lib/modules:/host/lib/modules:ro", "-e", f"GPUFORGE_IMAGE={image}"]
    if peermem:
        argv += ["-e", "GPUFORGE_PEERMEM=1"]
    return argv + [image, "init"]


def wanted_ref(image: str, labels: Dict[str, str], kernel: str) -> str:
    """The image of the same repository and driver built for `kernel` (the tag rule of builder.containers.spec)."""
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return f"{repo}:{labels.get(LABEL + 'driver', '?')}-{kernel.replace('+', '_')}-{labels.get(LABEL + 'os', '?')}"


def check_fits(image: str, labels: Dict[str, str], kernel: str) -> None:
    """UserError unless the image is a gpuforge driver image for this kernel."""
    built_for = labels.get(LABEL + "kernel")
    if not built_for:
        raise UserError(f"{image} is not a gpuforge driver image (no {LABEL}kernel label)",
                        hint="build one with `gpuforge build containers`")
    if built_for != kernel:
        raise UserError(f"{image} carries NVIDIA modules for kernel {built_for}, this node runs {kernel}",
                        hint=f"use {wanted_ref(image, labels, kernel)} (gpuforge build containers makes it once "
                             f"kernels/{kernel}.yaml is in the matrix)")


def mount_is_shared(mountinfo: str, path: str) -> bool:
    """Whether the mount holding `path` propagates (shared:N in /proc/self/mountinfo's optional fields)."""
    best, shared = "", False
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 7 or "-" not in parts:
            continue
        point = parts[4]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, shared = point, any(f.startswith("shared:") for f in parts[6:parts.index("-")])
    return shared


def read_state(root: Path = Path("/")) -> Optional[dict]:
    """The entrypoint's state file plus `ready` (state ready and the ready file there), or None when there is none
    (or it is unreadable)."""
    try:
        data = userfile.load_json(Path(root) / STATE, "driver container state file", top=dict)
    except ConfigError:
        return None
    return dict(data, ready=data.get("state") == "ready" and (Path(root) / READY).exists())


def _running_kernel(root: Path) -> str:
    return (Path(root) / "proc/sys/kernel/osrelease").read_text().strip()


def pull_image(image: str, run: Runner = subp.run) -> None:
    """docker pull; an unreachable registry is fine when the node has the image already (loaded from a disk,
    pulled earlier), an error otherwise."""
    try:
        run(["docker", "pull", image], timeout=1800)
    except CommandError as e:
        have = run(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=60, check=False)
        if have.ok:
            log.warning("cannot pull %s, using the image this node has (%s)", image, have.stdout.strip()[:19])
            return
        last = (e.stderr or e.stdout).strip().splitlines()[-1:] or [e.message]
        raise UserError(f"cannot pull {image}: {last[0]}", hint="check the reference and `docker login` for the registry") from None


def image_labels(image: str, run: Runner = subp.run) -> Dict[str, str]:
    res = run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image], timeout=60, check=False)
    if not res.ok:
        raise UserError(f"no image {image} on this node: {(res.stderr or res.stdout).strip()[:200]}",
                        hint="pull it first, or leave out --no-pull")
    return json.loads(res.stdout or "null") or {}


def ensure_shared_run(root: Path, run: Runner = subp.run) -> None:
    """/run/nvidia must propagate mounts both ways (`:rshared`); on hosts where /run does not, make it so."""
    (Path(root) / "run/nvidia").mkdir(parents=True, exist_ok=True)
    info = (Path(root) / "proc/self/mountinfo").read_text()
    if mount_is_shared(info, "/run/nvidia"):
        return
    if not re.search(r"^\S+ \S+ \S+ \S+ /run/nvidia ", info, re.M):
        run(["mount", "--bind", "/run/nvidia", "/run/nvidia"], timeout=30)
    run(["mount", "--make-rshared", "/run/nvidia"], timeout=30)


def remove_previous(name: str, run: Runner = subp.run) -> Optional[str]:
    """Stop (the entrypoint unloads on SIGTERM) and remove an earlier container of this name; its image id or None."""
    res = run(["docker", "inspect", "--format", "{{.Image}}", name], timeout=60, check=False)
    if not res.ok:
        return None
    run(["docker", "stop", "-t", "120", name], timeout=180, check=False)
    run(["docker", "rm", "-f", name], timeout=60, check=False)
    return res.stdout.strip()


def _container_status(name: str, run: Runner):
    res = run(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}", name],
              timeout=60, check=False)
    parts = res.stdout.split() if res.ok else []
    return (parts[0], int(parts[1]), int(parts[2])) if len(parts) == 3 else ("gone", -1, 0)


def _last_message(name: str, run: Runner) -> str:
    res = run(["docker", "logs", "--tail", "20", name], timeout=60, check=False)
    lines = [ln for ln in (res.stdout + "\n" + res.stderr).splitlines() if ln.startswith("gpuforge-driver: ")]
    return lines[-1][len("gpuforge-driver: "):] if lines else (res.stderr or res.stdout).strip()[-300:]


def wait_ready(image: str, name: str, root: Path, run: Runner, timeout: float,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> ContainerInstall:
    """Until the ready file appears (ready) or the container exits (ContainerFailed; the container is removed so
    it does not restart in a loop). The entrypoint writes its state before the ready file."""
    end = clock() + timeout
    while True:
        state = read_state(root) or {}
        if (Path(root) / READY).exists() and state.get("state") == "ready":
            return ContainerInstall(image, name, state.get("driver", ""), state.get("kernel", ""), "ready", True,
                                    state.get("message", ""))
        status, code, restarts = _container_status(name, run)
        if status in ("exited", "dead", "gone") or restarts > 0 or status == "restarting":
            state = read_state(root) or state  # the entrypoint writes its reason before it exits
            message = state.get("message") if state.get("state") not in (None, "ready", "starting", "loading") else ""
            message = message or _last_message(name, run)
            run(["docker", "rm", "-f", name], timeout=60, check=False)
            what = EXIT_STATES.get(code, state.get("state") or "failed")
            raise ContainerFailed(what, message or f"exit status {code}", hint=_HINTS.get(what))
        if clock() > end:
            raise ContainerFailed("timeout", f"no ready file after {timeout:.0f}s (state: {state.get('state', '?')})",
                                  hint=f"docker logs {name}")
        sleep(1.0)


_HINTS = {
    "no-gpu": "this node has no NVIDIA GPU the driver can drive (see lspci -d 10de:)",
    "in-use": "stop the processes or modules named above, then run the install again",
    "secure-boot": "use an image whose modules are signed with a key enrolled in the node's MOK list",
    "locked": "another driver container runs here: docker ps --filter name=gpuforge-driver",
}


def install(image: str, *, root: Path = Path("/"), run: Runner = subp.run, pull: bool = True, peermem: bool = False,
            timeout: float = 600, name: str = NAME, sleep: Callable[[float], None] = time.sleep) -> ContainerInstall:
    """Pull, check the kernel, (re)start the driver container, wait until it is ready or says why not."""
    kernel = _running_kernel(root)
    if pull:
        pull_image(image, run)
    labels = image_labels(image, run)
    check_fits(image, labels, kernel)
    ensure_shared_run(root, run)
    remove_previous(name, run)
    # No restarts while we watch (a failure stays a failure, with its own logs and state); once ready, the
    # container comes back after a reboot.
    run(run_argv(image, name=name, peermem=peermem, restart="no"), timeout=120)
    result = wait_ready(image, name, root, run, timeout, sleep)
    run(["docker", "update", "--restart=unless-stopped", name], timeout=60)
    return result

