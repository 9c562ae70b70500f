"""Render cloud-init/user-data.yaml.j2 (`gpuforge user-data`): operator accounts with SSH keys, hostname, expected
GPU inventory, driver method. Every field is checked before rendering, and the result is parsed back: the only
top-level keys it may have are the template's own (a value can never add runcmd, chpasswd, bootcmd ...)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import jinja2
import yaml

from validator.errors import UserError

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud-init" / "user-data.yaml.j2"
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RESERVED_USERS = ("root", "daemon", "bin", "sys", "nobody", "sshd", "systemd-network")
EXPECT = re.compile(r"^\d+x[A-Za-z0-9 ._-]+(,\d+x[A-Za-z0-9 ._-]+)*$")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
KEY_COMMENT = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,200})$")  # printable ASCII, one line
# docker reference: [registry[:port]/]path[:tag][@sha256:digest]
IMAGE_REF = re.compile(r"^(?:[a-z0-9.-]+(?::\d{1,5})?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                       r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
TOP_KEYS = {"users", "ssh_pwauth", "write_files", "hostname", "fqdn", "preserve_hostname", "manage_etc_hosts"}


@dataclass(frozen=True)
class User:
    name: str
    ssh_keys: tuple


@dataclass(frozen=True)
class DriverChoice:
    method: str  # native | precompiled | container (validator.setup.driver.METHODS)
    image: str = ""  # container: the driver container image


def check_ssh_key(key: str, where: str) -> str:
    """One OpenSSH public key line: known type, base64 blob that names the same type, printable comment."""
    if not isinstance(key, str) or any(c in key for c in "\r\n\0"):
        raise UserError(f"{where}: an SSH public key is one line (no line breaks)")
    parts = key.strip().split(" ", 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise UserError(f"{where}: not an SSH public key (expected '<type> <base64> [comment]', type one of "
                        f"{', '.join(KEY_TYPES[:3])}, ...)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{where}: the key's base64 part does not decode") from None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4:4 + n] != parts[0].encode():
        raise UserError(f"{where}: the key's data is not a {parts[0]} key")
    if len(parts) == 3 and not KEY_COMMENT.match(parts[2]):
        raise UserError(f"{where}: the key's comment must be printable ASCII on one line")
    return key.strip()


def check_hostname(hostname: str) -> str:
    """RFC 1123 host name: dot-separated labels of a-z, 0-9, '-', 253 characters at most."""
    h = hostname.lower() if isinstance(hostname, str) else ""
    if not h or len(h) > 253 or not all(HOST_LABEL.match(x) for x in h.split(".")):
        raise UserError(f"hostname {hostname!r}: expected letters, digits and '-' in dot-separated labels "
                        "(RFC 1123, 63 characters a label, 253 in all)")
    return h


def check_expect(expect: str) -> str:
    """Like 8xH100 or 2xH200,1xL4, with every model known to the validator's catalog."""
    if not EXPECT.match(expect):
        raise UserError(f"expected inventory {expect!r} is not like 8xH100 or 2xH200,1xL4")
    from validator.catalog import load_catalog

    cat = load_catalog()
    for part in expect.split(","):
        name = part.split("x", 1)[1].strip()
        try:
            cat.find(name)
        except UserError as e:
            raise UserError(f"expected inventory {expect!r}: {e.message}", hint=e.hint) from None
    return expect


def check_driver(d: DriverChoice) -> DriverChoice:
    from validator.setup.driver import METHODS

    if d.method not in METHODS:
        raise UserError(f"driver method {d.method!r}: expected one of {', '.join(METHODS)}")
    if d.method == "container" and not d.image:
        raise UserError("driver method container needs a driver image (--driver-image REF)")
    if d.method != "container" and d.image:
        raise UserError("--driver-image belongs to driver method container")
    if d.image and (len(d.image) > 512 or not IMAGE_REF.match(d.image)):
        raise UserError(f"driver image {d.image!r} is not an image reference like registry:5000/gpuforge/driver:535-6.1.0-54")
    return d


def render_user_data(users: Sequence[User] = (), expect: str = "", hostname: str = "",
                     driver: Optional[DriverChoice] = None) -> str:
    """The #cloud-config text; UserError (exit 2) names the first bad field, nothing is rendered then."""
    seen = set()
    for u in users:
        if not isinstance(u.name, str) or not USER.match(u.name) or u.name in RESERVED_USERS:
            raise UserError(f"user name {u.name!r} is not a valid Linux account name (a-z, 0-9, _ and -; not a system account)")
        if u.name in seen:
            raise UserError(f"user {u.name} is given twice")
        seen.add(u.name)
        if not u.ssh_keys:
            raise UserError(f"user {u.name} has no SSH key: the image has no passwords, it would be unreachable")
        for i, k in enumerate(u.ssh_keys):
            check_ssh_key(k, f"user {u.name}: key {i + 1}")
    if expect:
        check_expect(expect)
    if hostname:
        hostname = check_hostname(hostname)
    if driver is not None:
        check_driver(driver)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    text = env.from_string(TEMPLATE.read_text()).render(users=users, expect=expect, hostname=hostname, driver=driver)
    data = yaml.safe_load(text)  # must stay valid YAML whatever the values contain
    extra = set(data) - TOP_KEYS if isinstance(data, dict) else {"<not a mapping>"}
    if extra:
        raise UserError(f"user data would carry keys the template does not write: {', '.join(sorted(extra))}")
    return text


def read_key_args(values: Sequence[str]) -> tuple:
    """--ssh-key takes a key line or a file of key lines (~/.ssh/id_ed25519.pub, authorized_keys)."""
    keys = []
    for v in values:
        p = Path(v).expanduser()
        if "\n" not in v and not v.startswith(tuple(KEY_TYPES)) and p.is_file():
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"{p}: cannot read SSH key file ({e})") from None
            keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        else:
            keys.append(v)
    return tuple(keys)
