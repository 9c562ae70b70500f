"""Render cloud-init/user-data.yaml.j2: operator accounts with SSH keys, optional expected GPU inventory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from validator.errors import UserError

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud-init" / "user-data.yaml.j2"
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
EXPECT = re.compile(r"^\d+x[A-Za-z0-9 ._-]+(,\d+x[A-Za-z0-9 ._-]+)*$")


@dataclass(frozen=True)
class User:
    name: str
    ssh_keys: tuple


def render_user_data(users: tuple = (), expect: str = "", hostname: str = "") -> str:
    for u in users:
        if not USER.match(u.name):
            raise UserError(f"user name {u.name!r} is not a valid Linux account name")
        if not u.ssh_keys:
            raise UserError(f"user {u.name} has no SSH key: the image has no passwords, it would be unreachable")
    if expect and not EXPECT.match(expect):
        raise UserError(f"expected inventory {expect!r} is not like 8xH100 or 2xH200,1xL4")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    text = env.from_string(TEMPLATE.read_text()).render(users=users, expect=expect, hostname=hostname)
    yaml.safe_load(text)  # must stay valid YAML whatever the keys contain
    return text
