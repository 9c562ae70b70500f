"""Small, total parsers for sysfs/procfs values, sysctl dumps, kernel command lines and kernel logs.

Every parser returns None (or an empty container) on input it cannot read; none of them raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

_INT_RE = re.compile(r"^\s*(-?(?:0x[0-9a-fA-F]+|\d+))")


def parse_int(text: Optional[str]) -> Optional[int]:
    """'42\\n' -> 42, '0x10de' -> 4318, garbage -> None."""
    if text is None:
        return None
    m = _INT_RE.match(text)
    if not m:
        return None
    try:
        tok = m.group(1)
        return int(tok, 16) if "x" in tok else int(tok, 10)
    except ValueError:
        return None


def parse_float(text: Optional[str]) -> Optional[float]:
    """'70.33 W' -> 70.33, '1.5e3 W' -> 1500.0; 'N/A' -> None."""
    if text is None:
        return None
    m = re.match(r"^\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d{1,4})?)", text)  # '1e9 C' is 1e9, not 1
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def parse_cpulist(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """'0-3,8,10-11' -> (0,1,2,3,8,10,11); '' -> (); garbage -> None. Ranges are capped at 65536 CPUs."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return ()
    cpus = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo or hi - lo > 65536 or hi > 1 << 20:
            return None
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def parse_bracketed(text: Optional[str]) -> Optional[str]:
    """The selected value of a sysfs choice: 'always [madvise] never' -> 'madvise'."""
    if text is None:
        return None
    m = re.search(r"\[([^\]\s]+)\]", text)
    if m:
        return m.group(1)
    words = text.split()
    return words[0] if len(words) == 1 else None


def parse_link_speed(text: Optional[str]) -> Optional[float]:
    """'32.0 GT/s PCIe' -> 32.0 (GT/s); 'Unknown' -> None."""
    if text is None:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*GT/s", text)
    return float(m.group(1)) if m else None


# GT/s per PCIe generation (sysfs reports speed, nvidia-smi reports generation)
GEN_SPEED = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0, 7: 128.0}


def speed_to_gen(speed: Optional[float]) -> Optional[int]:
    if speed is None:
        return None
    for gen, gts in GEN_SPEED.items():
        if abs(gts - speed) < 0.01:
            return gen
    return None


def parse_kv_file(text: Optional[str], sep: str = ":") -> Dict[str, str]:
    """'MemTotal:  1 kB' lines -> {'MemTotal': '1 kB'}; lines without sep are ignored."""
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, s, val = line.partition(sep)
        if s and key.strip():
            out[key.strip()] = val.strip()
    return out


def parse_meminfo_kb(text: Optional[str], key: str) -> Optional[int]:
    return parse_int(parse_kv_file(text).get(key))


def parse_sysctl_dump(text: Optional[str]) -> Dict[str, str]:
    """`sysctl -a` output 'a.b = v' -> {'a.b': 'v'} (tabs inside values kept)."""
    return parse_kv_file(text, sep="=")


def sysctl_path(name: str) -> str:
    """vm.swappiness -> /proc/sys/vm/swappiness."""
    return "/proc/sys/" + name.replace(".", "/")


def sysctl_equal(observed: Optional[str], expected: object) -> bool:
    """Compare as integers when both are integers, else as whitespace-normalised strings."""
    if observed is None:
        return False
    a, b = parse_int(observed), parse_int(str(expected))
    if a is not None and b is not None and observed.strip().lstrip("-").isdigit() and str(expected).strip().lstrip("-").isdigit():
        return a == b
    return " ".join(observed.split()) == " ".join(str(expected).split())


def parse_cmdline(text: Optional[str]) -> List[Tuple[str, Optional[str]]]:
    """'a=1 b "c=x y"' -> [('a','1'), ('b', None), ('c','x y')] in order (later wins when looked up)."""
    out: List[Tuple[str, Optional[str]]] = []
    if not text:
        return out
    for tok in re.findall(r'(?:[^\s"]+|"[^"]*")+', text):
        tok = tok.replace('"', "")
        if not tok:
            continue
        key, s, val = tok.partition("=")
        out.append((key, val if s else None))
    return out


def cmdline_has(params: List[Tuple[str, Optional[str]]], flag: str) -> bool:
    """Is `flag` ('iommu=pt' or 'quiet') in effect? The last occurrence of a key wins."""
    key, s, val = flag.partition("=")
    last = None
    found = False
    for k, v in params:
        if k == key:
            found, last = True, v
    if not found:
        return False
    if not s:
        return True
    return (last or "") == val or (last or "") in val.split(",")  # 'mitigations=auto,nosmt'-style not split


# ---- kernel log ------------------------------------------------------------------------------

@dataclass(frozen=True)
class XidEvent:
    """One 'NVRM: Xid (PCI:0000:00:06.0): 79, ...' kernel log line."""

    bus_id: str
    xid: int
    text: str


_XID_MARK = "NVRM: Xid (PCI:"
# Matched only where the marker starts (re.match at one index): one attempt a line, linear in its length.
# Groups are bounded so a hostile line cannot make one attempt scan far: bus id, tag, XID number.
_XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F:.]{1,32})(?:\s+[^)]{0,200})?\):\s*(\d{1,9})\s*,?\s*(.{0,200})")
# A kernel log line is at most ~1 KiB (LOG_LINE_MAX); a longer one is cut before any parsing.
MAX_LOG_LINE = 4096


def log_lines(log: Optional[str], max_len: int = MAX_LOG_LINE):
    """The lines of a kernel log, each cut to max_len characters (no regex ever sees a 200k-char line)."""
    for line in (log or "").splitlines():
        yield line[:max_len]


def parse_xids(log: Optional[str]) -> List[XidEvent]:
    """Every XID event in a kernel log (dmesg or journalctl -k), in order."""
    events: List[XidEvent] = []
    for line in log_lines(log):
        at = line.find(_XID_MARK)
        m = _XID_RE.match(line, at) if at >= 0 else None
        if not m:
            continue
        try:
            xid = int(m.group(2))
        except ValueError:
            continue
        if xid > 1_000_000:
            continue
        events.append(XidEvent(normalize_bus_id(m.group(1)) or m.group(1), xid, m.group(3).strip()[:200]))
    return events


def normalize_bus_id(bus_id: Optional[str]) -> Optional[str]:
    """'00000000:00:06.0' / '0000:00:06.0' / '00:06.0' -> '0000:00:06.0' (lower case); garbage -> None."""
    if not bus_id:
        return None
    m = re.fullmatch(r"\s*(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*", bus_id)
    if not m:
        return None
    dom = int(m.group(1) or "0", 16)
    return f"{dom:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}.{m.group(4)}"
