"""Precompiled NVIDIA kmod packages on a node: which one fits (GPUs x running kernel), install, list, roll back.

The farm publishes packages named by validator.pkgname with Gpuforge-Driver/-Flavour/-Kernel fields in the apt
index. Here we read what apt offers (its downloaded Packages lists) and what dpkg has installed, choose with the
same selection rules as `gpu-validate detect`, install with apt, and keep a history for rollback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from validator import atomic, subp, userfile
from validator.errors import CommandError, ConfigError, GpuforgeError, UserError
from validator.schema import Reader
from validator.pkgname import PREFIX

HISTORY = "var/lib/gpuforge/kmod-history.json"
PIN_FILE = "etc/apt/preferences.d/gpuforge-nvidia.pref"
PIN_PACKAGES = "*nvidia* libcuda* libnv* xserver-xorg-video-nvidia*"
APT_LISTS = "var/lib/apt/lists"
Runner = Callable[..., subp.CmdResult]
# apt's uncompressed lists of a full Debian suite are ~50 MB; a file past this is not an apt list.
MAX_LIST_BYTES = 512 << 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KmodPackage:
    name: str
    version: str
    driver: str
    flavour: str
    kernel: str
    installed: bool = False
    module: str = "nvidia-current"  # the module file name for the main module (Debian renames nvidia.ko)
    exact: Tuple[str, ...] = ()  # versions its Depends pin with "=" (the user space of the same driver release)

    def to_dict(self) -> dict:
        return asdict(self)


def _vkey(v: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"\d+|[a-z]+", v))


def parse_stanzas(text: str) -> List[Dict[str, str]]:
    """RFC 822 paragraphs (apt Packages, dpkg status) -> dicts; continuation lines are joined."""
    out, cur, last = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last:
            cur[last] += "\n" + line.strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            cur[k.strip()] = v.strip()
            last = k.strip()
    if cur:
        out.append(cur)
    return out


# What each field of a kmod package may hold. They reach apt-get, modinfo and depmod as argv and a pin file as
# lines: a repository (or a capture) whose Packages file says "--allow-unauthenticated" or holds a newline must
# not be able to add an option or a line; such a stanza is skipped with a warning.
_FIELD_RULES = {
    "name": re.compile(r"^[a-z0-9][a-z0-9+.-]{1,200}$"),
    "version": re.compile(r"^[0-9][A-Za-z0-9.+~:-]{0,100}$"),
    "driver": re.compile(r"^\d{3}\.\d+(\.\d+)?$"),
    "flavour": re.compile(r"^(open|proprietary)$"),
    "kernel": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$"),
    "module": re.compile(r"^[A-Za-z0-9_-]{1,64}$"),
}


def check_package(p: KmodPackage) -> Optional[str]:
    """None when every field is well-formed, else which one is not (for a warning or an error)."""
    for name, rule in _FIELD_RULES.items():
        if not rule.match(getattr(p, name)):
            return f"{name} {getattr(p, name)[:80]!r}"
    bad = next((v for v in p.exact if not _FIELD_RULES["version"].match(v)), None)
    return f"exact version {bad[:80]!r}" if bad else None


def check_kernel(kernel: str) -> str:
    """A kernel release as `uname -r` prints it; anything else (a leading '-', spaces) is a UserError."""
    if not _FIELD_RULES["kernel"].match(kernel or ""):
        raise UserError(f"kernel release {kernel!r} is not one `uname -r` could print",
                        hint="letters, digits and . _ + ~ - (not starting with -)")
    return kernel


def _from_stanza(s: Dict[str, str], installed: bool = False) -> Optional[KmodPackage]:
    if not s.get("Package", "").startswith(PREFIX) or "Gpuforge-Kernel" not in s:
        return None
    exact = tuple(sorted(set(re.findall(r"\(= ([^)\s]+)\)", s.get("Depends", "")[:10000]))))
    p = KmodPackage(s["Package"], s.get("Version", ""), s.get("Gpuforge-Driver", ""), s.get("Gpuforge-Flavour", ""),
                    s["Gpuforge-Kernel"], installed, s.get("Gpuforge-Module", "nvidia-current"), exact)
    why = check_package(p)
    if why:
        log.warning("ignoring kmod package stanza %r: malformed %s", s.get("Package", "")[:80], why)
        return None
    return p


def package_from_control(text: str) -> KmodPackage:
    """A kmod package from its control text (`dpkg-deb -f X.deb` or an apt stanza); UserError if it is not one."""
    stanzas = parse_stanzas(text)
    p = _from_stanza(stanzas[0]) if stanzas else None
    if p is None:
        raise UserError("not a gpuforge kmod package (no Gpuforge-Kernel field)")
    return p


def read_deb(path: str, run: Runner = subp.run) -> KmodPackage:
    """The kmod package a local .deb file holds (its control fields)."""
    head = userfile.read_bytes(path, ".deb file", 8, head=True)  # missing, a FIFO, a folder: says which
    if head != b"!<arch>\n":  # every .deb is an ar archive: do not hand anything else to dpkg-deb
        raise UserError(f"{path}: not a Debian package (.deb is an ar archive starting with '!<arch>')")
    try:
        control = run(["dpkg-deb", "-f", str(path)], timeout=60).stdout
    except CommandError as e:
        raise UserError(f"{path}: dpkg-deb cannot read it: {e.message.splitlines()[0]}") from None
    try:
        return package_from_control(control)
    except UserError as e:
        raise UserError(f"{path}: {e.message}") from None


def _node_text(path: Path) -> Optional[str]:
    """An apt list or dpkg status file, bounded (a FIFO never blocks); None with a warning when unreadable."""
    try:
        return userfile.read_bytes(path, "package list", MAX_LIST_BYTES).decode("utf-8", errors="replace")
    except ConfigError as e:
        log.warning("skipping %s", e)
        return None


def available(root: Path = Path("/")) -> List[KmodPackage]:
    """kmod packages apt knows about (from the lists `apt-get update` downloaded)."""
    seen = {}
    d = Path(root) / APT_LISTS
    for f in sorted(d.glob("*_Packages")) if d.is_dir() else ():
        text = _node_text(f)
        if text is None:
            continue
        for s in parse_stanzas(text):
            p = _from_stanza(s)
            if p:
                seen[(p.name, p.version)] = p
    return sorted(seen.values(), key=lambda p: (p.kernel, _vkey(p.driver), p.flavour, _vkey(p.version)))


def installed(root: Path = Path("/")) -> List[KmodPackage]:
    """kmod packages dpkg has installed (its status file keeps our Gpuforge-* fields)."""
    status = Path(root) / "var/lib/dpkg/status"
    text = _node_text(status) if status.is_file() else None
    if text is None:
        return []
    out = []
    for s in parse_stanzas(text):
        if s.get("Status", "").endswith(" installed"):
            p = _from_stanza(s, installed=True)
            if p:
                out.append(p)
    return out


def current(kernel: str, root: Path = Path("/")) -> Optional[KmodPackage]:
    return next((p for p in installed(root) if p.kernel == kernel), None)


# ---------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Choice:
    package: Optional[KmodPackage]
    reason: str


def choose(models: Sequence, kernel: str, candidates: Sequence[KmodPackage], catalog, lists_for=None,
           driver: Optional[str] = None, flavour: Optional[str] = None) -> Choice:
    """The newest candidate for this kernel that every GPU model may use (same rules as detect; open first)."""
    from validator.idlists import lists_for_driver
    from validator.selection import FLAVOUR_PREFERENCE, evaluate_driver

    lists_for = lists_for or lists_for_driver
    pool = [p for p in candidates if p.kernel == kernel and (not driver or p.driver == driver)
            and (not flavour or p.flavour == flavour)]
    if not pool:
        have = sorted({p.kernel for p in candidates})
        want = " ".join(x for x in (driver, flavour) if x)
        return Choice(None, f"no precompiled package{' ' + want if want else ''} for kernel {kernel} in the apt "
                            f"lists (kernels offered: {', '.join(have) or 'none'}; run apt-get update?)")
    pref = {f: i for i, f in enumerate(FLAVOUR_PREFERENCE)}
    pool.sort(key=lambda p: (_vkey(p.driver), -pref.get(p.flavour, 9), _vkey(p.version)), reverse=True)
    if not models:
        p = pool[0]
        return Choice(p, f"no known GPU on this node: newest package for {kernel}")
    blocked = []
    for p in pool:
        lists = lists_for(p.driver)
        verdicts = [evaluate_driver(m, p.driver, lists, catalog, None, p.flavour) for m in models]
        bad = next((v for v in verdicts if not v.ok), None)
        if bad is None:
            names = ", ".join(m.name for m in models)
            return Choice(p, f"{p.driver} {p.flavour} supports {names} ({verdicts[0].deciding.reason})")
        blocked.append(f"{p.name}: {bad.deciding.reason}")
    return Choice(None, "no offered package supports every GPU: " + "; ".join(blocked))


# ---------------------------------------------------------------- acting


_HISTORY_FIELDS = ("package", "version", "kernel", "driver", "flavour", "action", "at")


def load_history(root: Path) -> List[dict]:
    """The install/rollback records, schema-checked: a corrupt file is a ConfigError (exit 2) raised before
    anything changes on the node, never a crash after apt already ran."""
    path = Path(root) / HISTORY
    if not os.path.lexists(path):
        return []
    hint = f"the file only feeds `drivers rollback`: move it aside (mv {path} {path}.bad) and run again"
    try:
        r = Reader(str(path), userfile.load_json(path, "kmod history (JSON)"))
        out = []
        for entry in r.list():
            entry.mapping()
            rec = {k: entry.key(k).str() for k in ("package", "version", "kernel")}
            rec.update({k: entry.key(k).str(nonempty=False) for k in _HISTORY_FIELDS[3:] if k in entry.value})
            out.append(rec)
        return out
    except ConfigError as e:
        e.hint = hint
        raise


def _record(root: Path, pkg: KmodPackage, action: str, history: Optional[List[dict]] = None) -> None:
    h = list(load_history(root) if history is None else history)
    h.append({"package": pkg.name, "version": pkg.version, "kernel": pkg.kernel, "driver": pkg.driver,
              "flavour": pkg.flavour, "action": action, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    atomic.write_text(Path(root) / HISTORY, json.dumps(h, indent=2) + "\n")


def module_path(kernel: str, run: Runner = subp.run, module: str = "nvidia-current") -> Optional[str]:
    """Where modinfo resolves the main module for that kernel (Debian's file name first, then plain nvidia)."""
    for name in dict.fromkeys((module, "nvidia")):
        r = run(["modinfo", "-k", kernel, "-F", "filename", name], check=False, timeout=30)
        if r.ok and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    return None


def pin_text(pkg: KmodPackage) -> str:
    """apt preferences that make the driver's own user-space version the candidate (apt never downgrades a
    dependency by itself: with 535.309.01 in bookworm-security, `nvidia-smi (= 535.261.03-1)` is otherwise unmet)."""
    out = [f"# gpu-validate drivers: NVIDIA user space of {pkg.name}={pkg.version}; rewritten on install/rollback"]
    for v in pkg.exact:
        # A version pin needs package names (apt refuses `Package: *` with `Pin: version`): globs over the
        # NVIDIA driver's binary packages; those without this version keep their normal candidate.
        out += ["", f"Package: {PIN_PACKAGES}", f"Pin: version {v}", "Pin-Priority: 1001"]
    return "\n".join(out) + "\n"


def install(pkg: KmodPackage, root: Path = Path("/"), run: Runner = subp.run, action: str = "install",
            deb: Optional[str] = None) -> str:
    """Pin the matching user space, apt-get install the exact package version (its Conflicts swap out another
    kmod for this kernel), depmod, and check that modinfo resolves the module."""
    # Validate the input and the local state first, then act: nothing below may fail after apt has run.
    why = check_package(pkg)
    if why:
        raise UserError(f"refusing to install {pkg.name[:80]!r}: malformed {why}")
    history = load_history(root)
    pin = Path(root) / PIN_FILE
    before = userfile.read_text(pin, "apt preferences file") if os.path.lexists(pin) else None
    for out in (pin, Path(root) / HISTORY):
        atomic.check_writable(out)
    atomic.write_text(pin, pin_text(pkg))
    try:
        target = str(Path(deb).resolve()) if deb else f"{pkg.name}={pkg.version}"  # apt takes a local .deb by path
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", target],
            timeout=1800, env={"DEBIAN_FRONTEND": "noninteractive"})
    except GpuforgeError:
        if before is None:
            pin.unlink(missing_ok=True)
        else:
            atomic.write_text(pin, before)
        raise
    run(["depmod", "-a", pkg.kernel], timeout=300)
    path = module_path(pkg.kernel, run, pkg.module)
    if not path:
        raise GpuforgeError(f"{pkg.name} installed but modinfo does not resolve {pkg.module} for {pkg.kernel}")
    _record(root, pkg, action, history)
    return path


def rollback_target(kernel: str, root: Path = Path("/"), to: Optional[str] = None,
                    offered: Optional[Sequence[KmodPackage]] = None) -> KmodPackage:
    """The package to go back to: --to (a version or driver version), else the previous one in the history."""
    offered = list(available(root) if offered is None else offered)
    now = current(kernel, root)
    cands = [p for p in offered if p.kernel == kernel and (now is None or (p.name, p.version) != (now.name, now.version))]
    if to:
        match = [p for p in cands if to in (p.version, p.driver, p.name)]
        if not match:
            raise UserError(f"no offered kmod package for {kernel} matches {to!r}",
                            hint="see `gpu-validate drivers list`")
        return sorted(match, key=lambda p: _vkey(p.version))[-1]
    for h in reversed(load_history(root)):
        if h.get("kernel") != kernel or (now and (h["package"], h["version"]) == (now.name, now.version)):
            continue
        for p in cands:
            if (p.name, p.version) == (h["package"], h["version"]):
                return p
        raise UserError(f"the previous package {h['package']}={h['version']} is no longer offered by apt",
                        hint="pass --to with a version from `gpu-validate drivers list`")
    raise UserError(f"nothing to roll back to for {kernel}: no earlier precompiled package in the history",
                    hint="pass --to with a version from `gpu-validate drivers list`")
