"""The node side of driver containers: the docker run line, the kernel-fit refusal naming the tag, /run/nvidia
propagation, install() against a scripted docker (injected runner), and the container.driver_container check on
the H100 capture (ready, wrong version, failed state, none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from validator_helpers import write

from validator import driver_container as dc
from validator.errors import UserError
from validator.runner import validate
from validator.subp import CmdResult

ABI = "6.1.0-54-cloud-amd64"
IMAGE = f"127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-{ABI}-debian12"
LABELS = {"io.gpuforge.kernel": ABI, "io.gpuforge.driver": "535.261.03", "io.gpuforge.os": "debian12"}
SHARED = "24 1 0:22 / / rw shared:1 - overlay overlay rw\n30 24 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw\n"
PRIVATE = "24 1 0:22 / / rw - overlay overlay rw\n30 24 0:25 / /run rw,nosuid - tmpfs tmpfs rw\n"


def test_run_line_has_the_flags_the_entrypoint_needs():
    argv = dc.run_argv(IMAGE)
    assert argv[:3] == ["docker", "run", "-d"] and argv[-2:] == [IMAGE, "init"]
    for flag in ("--privileged", "--pid=host", "--restart=unless-stopped", "--network=none"):
        assert flag in argv
    assert "/run/nvidia:/run/nvidia:rshared" in argv and "/lib/modules:/host/lib/modules:ro" in argv
    assert f"GPUFORGE_IMAGE={IMAGE}" in argv and "GPUFORGE_PEERMEM=1" not in argv
    assert "GPUFORGE_PEERMEM=1" in dc.run_argv(IMAGE, peermem=True)


def test_readme_shows_exactly_the_run_line():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text[text.index("  docker run -d --name gpuforge-driver"):]
    block = block[:block.index("```")]
    line = " ".join(part.strip().rstrip("\\").strip() for part in block.splitlines() if part.strip())
    assert line == " ".join(dc.run_argv("REF"))


def test_an_image_for_another_kernel_is_refused_naming_the_right_tag():
    with pytest.raises(UserError) as e:
        dc.check_fits(IMAGE, LABELS, "6.12.117+deb13-cloud-amd64")
    assert "for kernel 6.1.0-54-cloud-amd64, this node runs 6.12.117+deb13-cloud-amd64" in e.value.message
    assert "127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-6.12.117_deb13-cloud-amd64-debian12" in e.value.hint
    dc.check_fits(IMAGE, LABELS, ABI)
    with pytest.raises(UserError, match="not a gpuforge driver image"):
        dc.check_fits("debian:12", {}, ABI)


@pytest.mark.parametrize("image,want", [
    (IMAGE, "127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-6.1.0-50-cloud-amd64-debian12"),
    ("gpuforge/nvidia-driver@sha256:" + "a" * 64, "gpuforge/nvidia-driver:535.261.03-6.1.0-50-cloud-amd64-debian12"),
    ("127.0.0.1:5000/nvidia-driver", "127.0.0.1:5000/nvidia-driver:535.261.03-6.1.0-50-cloud-amd64-debian12"),
])
def test_wanted_ref_keeps_repository_and_registry(image, want):
    assert dc.wanted_ref(image, LABELS, "6.1.0-50-cloud-amd64") == want


def test_mount_propagation_is_read_from_mountinfo():
    assert dc.mount_is_shared(SHARED, "/run/nvidia")
    assert not dc.mount_is_shared(PRIVATE, "/run/nvidia")
    own = PRIVATE + "40 30 0:25 /nvidia /run/nvidia rw shared:9 - tmpfs tmpfs rw\n"
    assert dc.mount_is_shared(own, "/run/nvidia")


class Docker:
    """A scripted docker + mount for install(): records argv; the container 'runs' the entrypoint's outcome."""

    def __init__(self, root: Path, outcome: str = "ready", exit_code: int = 0, message: str = ""):
        self.root, self.outcome, self.exit_code, self.message = root, outcome, exit_code, message
        self.calls = []
        self.started = False

    def __call__(self, argv, timeout=None, check=True, **kw):
        self.calls.append(list(argv))
        a = list(argv)
        if a[:3] == ["docker", "image", "inspect"]:
            return CmdResult(tuple(a), 0, json.dumps(LABELS), "")
        if a[:2] == ["docker", "run"]:
            self.started = True
            state = {"state": self.outcome, "driver": "535.261.03", "kernel": ABI, "message": self.message}
            write(self.root, dc.STATE, json.dumps(state))
            if self.outcome == "ready":
                write(self.root, dc.READY, "driver=535.261.03\n")
            return CmdResult(tuple(a), 0, "c0ffee\n", "")
        if a[:2] == ["docker", "inspect"] and "{{.Image}}" in a:
            return CmdResult(tuple(a), 1, "", "Error: No such object")
        if a[:2] == ["docker", "inspect"]:
            if self.outcome == "ready":
                return CmdResult(tuple(a), 0, "running 0 0\n", "")
            return CmdResult(tuple(a), 0, f"exited {self.exit_code} 0\n", "")
        if a[:2] == ["docker", "logs"]:
            return CmdResult(tuple(a), 0, "", f"gpuforge-driver: kernel 6.1.0-54 matches\ngpuforge-driver: {self.message}\n")
        return CmdResult(tuple(a), 0, "", "")


@pytest.fixture
def node(tmp_path):
    write(tmp_path, "proc/sys/kernel/osrelease", ABI + "\n")
    write(tmp_path, "proc/self/mountinfo", SHARED)
    return tmp_path


def test_install_runs_the_line_and_waits_for_ready(node):
    d = Docker(node)
    r = dc.install(IMAGE, root=node, run=d, sleep=lambda s: None)
    assert r.state == "ready" and r.ready and r.driver == "535.261.03"
    assert ["docker", "pull", IMAGE] in d.calls
    assert dc.run_argv(IMAGE, restart="no") in d.calls
    assert d.calls[-1] == ["docker", "update", "--restart=unless-stopped", "gpuforge-driver"]
    assert not [c for c in d.calls if c[0] == "mount"]  # /run is shared already


def test_install_makes_run_nvidia_shared_where_run_is_not(node):
    write(node, "proc/self/mountinfo", PRIVATE)
    d = Docker(node)
    dc.install(IMAGE, root=node, run=d, sleep=lambda s: None, pull=False)
    assert ["mount", "--bind", "/run/nvidia", "/run/nvidia"] in d.calls
    assert ["mount", "--make-rshared", "/run/nvidia"] in d.calls
    assert ["docker", "pull", IMAGE] not in d.calls


def test_install_passes_on_the_entrypoints_reason_and_removes_the_container(node):
    d = Docker(node, "no-gpu", 7, "no NVIDIA GPU: modprobe nvidia found no device to drive")
    with pytest.raises(dc.ContainerFailed) as e:
        dc.install(IMAGE, root=node, run=d, sleep=lambda s: None)
    assert e.value.state == "no-gpu" and "no NVIDIA GPU" in e.value.message
    assert ["docker", "rm", "-f", "gpuforge-driver"] in d.calls
    assert not [c for c in d.calls if c[:2] == ["docker", "update"]]


def test_install_refuses_a_mismatching_image_before_running_it(node):
    write(node, "proc/sys/kernel/osrelease", "6.1.0-50-cloud-amd64\n")
    d = Docker(node)
    with pytest.raises(UserError, match="this node runs 6.1.0-50-cloud-amd64"):
        dc.install(IMAGE, root=node, run=d, sleep=lambda s: None)
    assert not d.started


# ------------------------------------------------------------------------------------------- the check


def _check(root):
    res = [r for r in validate(root=root, level="quick").results if r.id == "container.driver_container"]
    assert len(res) == 1
    return res[0]


def _state(root, state="ready", driver="580.159.04"):
    write(root, dc.STATE, json.dumps({"state": state, "driver": driver, "image": IMAGE, "message": "m"}))


def test_check_passes_when_ready_with_the_images_version(h100_copy):
    _state(h100_copy)
    write(h100_copy, dc.READY, "x\n")
    r = _check(h100_copy)
    assert r.status == "pass" and "580.159.04" in r.observed


def test_check_fails_on_a_version_other_than_the_images(h100_copy):
    _state(h100_copy, driver="535.261.03")
    write(h100_copy, dc.READY, "x\n")
    r = _check(h100_copy)
    assert r.status == "fail" and "580.159.04" in r.observed and "535.261.03" in r.expected


def test_check_fails_without_ready_file_and_says_the_state(h100_copy):
    _state(h100_copy, state="no-gpu")
    r = _check(h100_copy)
    assert r.status == "fail" and "no-gpu" in r.observed and "absent" in r.observed


def test_check_skips_without_a_driver_container(h100_copy):
    assert _check(h100_copy).status == "skip"
    write(h100_copy, dc.STATE, "{not json")
    assert _check(h100_copy).status == "fail"


def test_an_unreachable_registry_is_fine_when_the_node_has_the_image(node):
    from validator.errors import CommandError

    class Offline(Docker):
        def __call__(self, argv, timeout=None, check=True, **kw):
            if list(argv)[:2] == ["docker", "pull"]:
                self.calls.append(list(argv))
                raise CommandError(list(argv), 1, "", "Error response from daemon: Get http://127.0.0.1:5000/v2/: connection refused")
            if list(argv)[:3] == ["docker", "image", "inspect"] and "{{.Id}}" in argv:
                self.calls.append(list(argv))
                return CmdResult(tuple(argv), 0 if self.have else 1, "sha256:abc\n" if self.have else "", "")
            return super().__call__(argv, timeout=timeout, check=check, **kw)

    d = Offline(node)
    d.have = True
    assert dc.install(IMAGE, root=node, run=d, sleep=lambda s: None).ready
    d = Offline(node)
    d.have = False
    with pytest.raises(UserError, match="cannot pull .*connection refused"):
        dc.install(IMAGE, root=node, run=d, sleep=lambda s: None)
    assert not d.started


def test_read_state_says_ready_only_with_the_ready_file(node):
    write(node, dc.STATE, json.dumps({"state": "ready", "image": IMAGE, "driver": "535.261.03"}))
    assert dc.read_state(node)["ready"] is False
    write(node, dc.READY, "x\n")
    assert dc.read_state(node)["ready"] is True and dc.read_state(node)["image"] == IMAGE
    write(node, dc.STATE, "[1, 2]")
    assert dc.read_state(node) is None
