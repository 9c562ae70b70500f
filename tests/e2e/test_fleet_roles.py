"""The roles against Debian containers through Ansible's docker connection (community.docker), no SSH, no VM:
real apt, real dpkg, the node CLI from this tree's validator .deb. Fast checks of what the VM test cannot afford
(docker install through `gpu-validate setup runtime`, packages) and of bad input."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from validator.atomic import write_text

import fleet_env
from fleet_env import ANSIBLE_DIR, Fleet, validator_deb

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def node_image():
    return fleet_env.node_image()


@pytest.fixture
def containers(node_image, tmp_path):
    """Start named containers (sleep infinity); removed after the test whatever happens."""
    from builder.buildenv import docker_client

    client = docker_client()
    started = []

    def start(n: int = 1):
        for _ in range(n):
            c = client.containers.run(node_image.tag, ["sleep", "infinity"], detach=True, remove=False,
                                      name=f"gpuforge-fleet-{uuid.uuid4().hex[:8]}")
            started.append(c)
        return started[-n:]

    yield start
    for c in started:
        c.remove(force=True)


def _fleet(tmp_path: Path, names, **vars_) -> Fleet:
    inv = {"all": {"children": {"gpu_nodes": {"hosts": {n: {} for n in names}, "vars": dict({
        "ansible_connection": "community.docker.docker", "ansible_user": "root", "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3",
        "gpu_baseline_validator_deb": str(validator_deb(tmp_path / "deb")),
        "gpu_baseline_container_runtime": False, "benchmark_tools_packages": [],
        "gpu_validation_reports_dir": str(tmp_path / "reports"),
    }, **vars_)}}}}
    write_text(tmp_path / "inventory.yml", yaml.safe_dump(inv))
    (tmp_path / "ansible-tmp").mkdir(exist_ok=True)
    return Fleet(tmp_path, Path("/dev/null"), [], tmp_path / "inventory.yml", tmp_path / "reports")


def _exec(c, cmd: str) -> str:
    rc, out = c.exec_run(["sh", "-c", cmd])
    return out.decode(errors="replace")


def test_setup_rolls_out_validator_installs_docker_and_packages_idempotently(containers, tmp_path):
    (c,) = containers(1)
    f = _fleet(tmp_path, [c.name], gpu_baseline_container_runtime=True, benchmark_tools_packages=["numactl"])
    first = f.playbook("setup.yml")
    assert first.rc == 0, first.output[-4000:]
    assert first.changed(c.name) >= 3  # validator, docker.io, numactl
    assert "driver: no NVIDIA GPU on PCI: driver steps skipped" in first.output
    assert "gpu-settings: no NVIDIA GPU on PCI" in first.output
    assert "gpuforge-validator" in _exec(c, "dpkg-query -W gpuforge-validator")
    assert "install ok installed" in _exec(c, "dpkg-query -W -f='${Status}' docker.io numactl")
    again = f.playbook("setup.yml")
    assert again.rc == 0 and again.changed(c.name) == 0, again.output[-4000:]


def test_tuning_role_in_a_container_writes_files_and_says_what_is_read_only(containers, tmp_path):
    (c,) = containers(1)
    f = _fleet(tmp_path, [c.name])
    check = f.playbook("deploy.yml", "--check")  # no validator yet: check mode cannot plan, and says why
    assert check.rc == 2 and "has no 'setup' command" in check.output and "check mode plans with the installed one" in check.output
    assert f.playbook("setup.yml").rc == 0  # rolls out the validator
    check = f.playbook("deploy.yml", "--check")
    assert check.rc == 0 and check.changed(c.name) > 0, check.output[-4000:]
    assert _exec(c, "ls /etc/sysctl.d/90-gpuforge.conf 2>&1").startswith("ls:")  # --check wrote nothing
    first = f.playbook("deploy.yml")
    assert first.rc == 0, first.output[-4000:]
    assert "vm.swappiness = 1" in _exec(c, "cat /etc/sysctl.d/90-gpuforge.conf")
    assert "ExecStart=/usr/libexec/gpuforge/apply-tuning" in _exec(c, "cat /etc/systemd/system/gpuforge-tuning.service")
    # /proc/sys is read-only in a container and there is no boot loader: said, not failed, and no reboot.
    assert "read-only here" in first.output and "no boot configuration gpuforge manages" in first.output
    assert "Reboot the node" not in first.output
    assert (tmp_path / "reports" / f"{c.name}.json").exists() and (tmp_path / "reports" / "fleet.html").exists()
    again = f.playbook("deploy.yml")
    assert again.rc == 0 and again.changed(c.name) == 0, again.output[-4000:]


def test_bad_method_or_profile_fails_that_host_only_before_any_change(containers, tmp_path):
    a, b, c = containers(3)
    f = _fleet(tmp_path, [a.name, b.name, c.name])
    inv = yaml.safe_load((tmp_path / "inventory.yml").read_text())
    hosts = inv["all"]["children"]["gpu_nodes"]["hosts"]
    hosts[a.name] = {"gpu_baseline_driver_method": "dkms"}
    hosts[b.name] = {"cpu_optimization_profile": "gpu-turbo"}
    write_text(tmp_path / "inventory.yml", yaml.safe_dump(inv))
    r = f.playbook("deploy.yml")
    assert r.rc == 2, r.output[-4000:]  # ansible-playbook: a host failed
    assert r.hosts[a.name]["failed"] == 1 and "unknown driver method 'dkms'" in r.output
    assert r.hosts[b.name]["failed"] == 1 and "no packaged tuning profile 'gpu-turbo'" in r.output
    assert r.hosts[c.name]["failed"] == 0 and (tmp_path / "reports" / f"{c.name}.json").exists()
    for bad in (a, b):  # refused before any change: no tuning files
        assert _exec(bad, "ls /etc/sysctl.d/90-gpuforge.conf 2>&1").startswith("ls:")


def test_ngc_images_role_skips_cleanly_without_the_verb_or_pulls_with_it(containers, tmp_path):
    (c,) = containers(1)
    f = _fleet(tmp_path, [c.name], ngc_images_list=["cuda"])
    r = f.playbook("setup.yml")
    has_ngc = "Usage" in _exec(c, "gpu-validate ngc --help 2>&1")
    if not has_ngc:
        assert r.rc == 0 and "has no ngc command: NGC pre-pull skipped" in r.output, r.output[-3000:]
    else:  # no docker engine in this container: the pull fails with the CLI's message, the play says so
        assert "Pull NGC images" in r.output


def test_playbooks_pass_ansible_lint():
    from validator import subp

    r = subp.run([str(Path(sys.executable).parent / "ansible-lint"), "--offline"], cwd=str(ANSIBLE_DIR), timeout=900,
                 check=False, env={"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
