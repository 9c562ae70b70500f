"""The fleet playbooks for real: two qemu (TCG) guests booted from the untuned golden image, Ansible over SSH on
127.0.0.1 forwards with a throwaway key. validate -> deploy --check (nothing changes) -> deploy (tuning applied,
reboot, groups warn -> pass) -> deploy again (no changes). One image build and one boot of each guest for it all."""

from __future__ import annotations

import os

import pytest

from builder.images import qemu

from fleet_env import boot_fleet, untuned_image, write_inventory

pytestmark = pytest.mark.e2e
HOSTS = ("gpu-node-01", "gpu-node-02")
TUNED_GROUPS = ("memory", "kernel")  # what gpu-performance changes that a TCG guest can show
SSH_TIMEOUT = float(os.environ.get("GPUFORGE_BOOT_TIMEOUT", "1800"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = boot_fleet(tmp_path_factory.mktemp("fleet"), untuned_image(), HOSTS, SSH_TIMEOUT)
    try:
        yield f
    finally:
        f.stop()


def _boot_id(fleet, g) -> str:
    return fleet.ssh(g, "cat /proc/sys/kernel/random/boot_id").strip()


def _node_state(fleet, g) -> str:
    """What deploy changes, read without changing it: tuning files, sysctls, grub command line, boot id."""
    return fleet.ssh(g, "ls /etc/sysctl.d /etc/gpuforge 2>&1; sysctl -n vm.swappiness vm.dirty_ratio; "
                        "grep -c iommu=pt /boot/grub/grub.cfg; cat /proc/sys/kernel/random/boot_id; "
                        "dpkg-query -W gpuforge-validator")


@pytest.fixture(scope="module")
def before(fleet):
    """validate.yml on the untuned fleet plus a host nobody answers on: the play reports it and goes on."""
    ghost = qemu.free_port()
    inv = write_inventory(fleet.work / "inventory-ghost.yml", fleet.guests, fleet.key, fleet.reports, None,
                          extra_hosts={"gpu-node-ghost": ghost})
    rec = fleet.playbook("validate.yml", inventory=inv)
    return rec, {h: fleet.report(h) for h in HOSTS}


def test_validate_gathers_reports_fleet_page_and_checklists(fleet, before):
    rec, reports = before
    assert rec.hosts["gpu-node-ghost"]["unreachable"] == 1, rec.output[-3000:]
    assert rec.rc == 4  # ansible-playbook: some host unreachable
    for h in HOSTS:
        assert rec.hosts[h]["failed"] == 0 and rec.hosts[h]["unreachable"] == 0, rec.output[-3000:]
        assert reports[h]["host"] == h and reports[h]["profile"] == "gpu-performance"
        assert f"{h}: " in rec.output and "BIOS / manual settings to check by hand" in rec.output
    assert "[ ] Power profile: Maximum Performance" in rec.output
    page = (fleet.reports / "fleet.html").read_text()
    assert all(h in page for h in HOSTS) and "ghost" not in page
    # Untuned image, gpu-performance expected: the groups the profile governs warn.
    for h in HOSTS:
        for grp in TUNED_GROUPS:
            assert reports[h]["groups"][grp] == "warn", (h, grp, reports[h]["groups"])


def test_deploy_check_mode_changes_nothing(fleet, before):
    states = {g.name: _node_state(fleet, g) for g in fleet.guests}
    rec = fleet.playbook("deploy.yml", "--check")
    assert rec.rc == 0, rec.output[-4000:]
    for h in HOSTS:
        assert rec.changed(h) > 0  # it says what it would change ...
    for g in fleet.guests:  # ... and changes nothing, reboots nothing
        assert _node_state(fleet, g) == states[g.name]
    assert "90-gpuforge.conf" not in states[HOSTS[0]]


@pytest.fixture(scope="module")
def deployed(fleet, before):
    boots = {g.name: _boot_id(fleet, g) for g in fleet.guests}
    rec = fleet.playbook("deploy.yml")
    return rec, boots, {h: fleet.report(h) for h in HOSTS}


def test_deploy_tunes_reboots_and_groups_pass(fleet, deployed):
    rec, boots, reports = deployed
    assert rec.rc == 0, rec.output[-5000:]
    print(f"\ndeploy.yml on {len(HOSTS)} TCG guests, first run: {rec.seconds:.0f}s wall")
    for g in fleet.guests:
        assert rec.changed(g.name) > 0
        assert _boot_id(fleet, g) != boots[g.name], f"{g.name} did not reboot for the kernel command line"
        cmdline = fleet.ssh(g, "cat /proc/cmdline").split()
        assert {"iommu=pt", "pcie_aspm=off", "processor.max_cstate=1"} <= set(cmdline)
        assert fleet.ssh(g, "systemctl is-active gpuforge-tuning.service").strip() == "active"
        groups = reports[g.name]["groups"]
        for grp in TUNED_GROUPS:
            assert groups[grp] == "pass", (g.name, grp, groups, [
                (c["id"], c["status"], c["observed"]) for c in reports[g.name]["results"] if c["group"] == grp])
        assert groups["cpu"] in ("pass", "skip"), groups  # no cpufreq/cpuidle knobs in a TCG guest: skip
    assert "reboot needed: kernel command line lacks" in rec.output


def test_second_deploy_reports_no_changes(fleet, deployed):
    boots = {g.name: _boot_id(fleet, g) for g in fleet.guests}
    rec = fleet.playbook("deploy.yml")
    assert rec.rc == 0, rec.output[-4000:]
    print(f"\ndeploy.yml idempotent re-run: {rec.seconds:.0f}s wall")
    for g in fleet.guests:
        assert rec.changed(g.name) == 0, rec.output[-4000:]
        assert _boot_id(fleet, g) == boots[g.name]
