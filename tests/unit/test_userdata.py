"""`gpuforge user-data`: every field checked, and no value can add keys to the #cloud-config (hostile corpus + fuzz)."""

from __future__ import annotations

import base64

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.cli import main
from builder.images.userdata import DriverChoice, User, check_hostname, render_user_data
from validator.errors import UserError

KEY = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(32))).decode() + " ops@x"


def test_renders_valid_cloud_config_with_every_field():
    text = render_user_data((User("ops", (KEY,)),), expect="8xH100", hostname="gpu-01",
                            driver=DriverChoice("container", "127.0.0.1:5000/gpuforge/driver:535-6.1.0-54"))
    data = yaml.safe_load(text)
    assert text.startswith("#cloud-config")
    assert data["users"][0]["name"] == "ops" and data["users"][0]["ssh_authorized_keys"] == [KEY]
    assert data["users"][0]["lock_passwd"] is True and data["ssh_pwauth"] is False
    files = {f["path"]: f["content"] for f in data["write_files"]}
    assert files == {"/etc/gpuforge/expect": "8xH100", "/etc/gpuforge/driver-method": "container",
                     "/etc/gpuforge/driver-image": "127.0.0.1:5000/gpuforge/driver:535-6.1.0-54"}
    assert data["hostname"] == "gpu-01"
    assert yaml.safe_load(render_user_data()) == {"ssh_pwauth": False}


HOSTILE_HOSTNAMES = ["gpu\nruncmd: [reboot]", "gpu\r\nchpasswd: {list: 'root:x'}", "a b", "-gpu", "gpu-", "gpu_01",
                     "x" * 64, ".".join(["a" * 63] * 5), "gpu;reboot", "gpu$(id)", "\x1b[2Jgpu", "", "gpu..x", "ümlaut"]


@pytest.mark.parametrize("h", HOSTILE_HOSTNAMES)
def test_hostile_hostnames_refused(h):
    with pytest.raises(UserError):
        check_hostname(h) if h == "" else render_user_data(hostname=h)


HOSTILE_KEYS = ["ssh-ed25519 AAAA x", "ssh-ed25519", KEY + "\nruncmd: [reboot]", KEY.replace("ops@x", "ops\x1b[31m"),
                "ssh-dss " + KEY.split()[1], "ssh-rsa " + KEY.split()[1], "not a key", KEY + "\r", "ssh-ed25519 !!!! x"]


@pytest.mark.parametrize("k", HOSTILE_KEYS)
def test_hostile_ssh_keys_refused(k):
    with pytest.raises(UserError):
        render_user_data((User("ops", (k,)),))


@pytest.mark.parametrize("users", [(User("root", (KEY,)),), (User("Ops", (KEY,)),), (User("ops\nx", (KEY,)),),
                                   (User("ops", ()),), (User("ops", (KEY,)), User("ops", (KEY,))), (User("a" * 40, (KEY,)),)])
def test_bad_users_refused(users):
    with pytest.raises(UserError):
        render_user_data(users)


@pytest.mark.parametrize("expect", ["8xH100; reboot", "8xH100\nruncmd: [x]", "8xH999", "0xH100,", "H100", "8x"])
def test_bad_expect_refused(expect):
    with pytest.raises(UserError):
        render_user_data(expect=expect)


@pytest.mark.parametrize("driver", [DriverChoice("dkms"), DriverChoice("container"), DriverChoice("native", "x:1"),
                                    DriverChoice("container", "Reg/UPPER:1"), DriverChoice("container", "a:1\nruncmd: [x]"),
                                    DriverChoice("container", "a b")])
def test_bad_driver_choice_refused(driver):
    with pytest.raises(UserError):
        render_user_data(driver=driver)


@settings(max_examples=300, deadline=None)
@given(h=st.text(min_size=1, max_size=80), e=st.text(max_size=40), img=st.text(max_size=60))
def test_fuzz_no_value_adds_top_level_keys(h, e, img):
    """Whatever the strings, either a UserError or user data whose keys are only the template's."""
    try:
        text = render_user_data((User("ops", (KEY,)),), expect=e, hostname=h,
                                driver=DriverChoice("container", img) if img else None)
    except UserError:
        return
    data = yaml.safe_load(text)
    assert set(data) <= {"users", "ssh_pwauth", "write_files", "hostname", "preserve_hostname", "manage_etc_hosts"}
    assert data["hostname"] == h.lower() and len(data["users"]) == 1


def test_cli_writes_file_and_bad_input_exits_2(tmp_path):
    keyfile = tmp_path / "id.pub"
    keyfile.write_text(KEY + "\n")
    out = tmp_path / "user-data"
    r = CliRunner().invoke(main, ["user-data", "--ssh-key", str(keyfile), "--hostname", "n1", "--expect", "2xH200",
                                  "--driver-method", "native", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(out.read_text())["users"][0]["ssh_authorized_keys"] == [KEY]
    r = CliRunner().invoke(main, ["user-data", "--ssh-key", str(keyfile), "--hostname", "n1\nruncmd: [reboot]",
                                  "-o", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "hostname" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad").exists()
    r = CliRunner().invoke(main, ["user-data", "--ssh-key", str(keyfile), "--driver-image", "x:1"])
    assert r.exit_code == 2 and "--driver-method container" in r.output
