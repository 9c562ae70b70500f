"""Bounded reads of files a user names (YAML, JSON, text): a regular file, capped in size, UTF-8, of sane shape.

Every failure is a ConfigError naming the file and what was expected: a directory, a FIFO or device (never
opened blocking), binary data, a file of gigabytes, JSON nested a million deep or YAML aliases that expand
to billions of nodes all end as exit 2, never as a hang, a traceback or an exhausted memory.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Optional, Union

from validator.errors import ConfigError

# Far above any file the project ships or reads (the largest, an ID list, is ~40 KiB; a saved report ~1 MiB).
MAX_BYTES = 16 << 20
# Nesting and (alias-expanded) node budget of a parsed document: real files nest < 10 deep and hold < 100k nodes.
MAX_DEPTH = 64
MAX_NODES = 250_000

_WHERE = "(file)"


class UnreadableFile(ConfigError):
    """The file cannot be opened or read at all (missing, no permission, a directory, a FIFO, too big)."""

    def __init__(self, path: str, expected: str, reason: str):
        super().__init__(path, _WHERE, expected, reason)
        self.message = f"{path}: cannot read: {reason} (expected {expected})"
        self.reason = reason


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: Union[str, Path], what: str = "file", max_bytes: Optional[int] = None,
               head: bool = False) -> bytes:
    """The bytes of a regular file of at most max_bytes; O_NONBLOCK so a FIFO or device never blocks the open.
    With head=True, the first max_bytes bytes of a file of any size (a magic number)."""
    path = str(path)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    expected = f"a readable {what}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnreadableFile(path, expected, e.strerror or str(e)) from None
    except ValueError as e:  # an embedded NUL in the name
        raise UnreadableFile(path, expected, str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(path, f"a regular {what}", f"it is {_kind(st.st_mode)}")
        if st.st_size > max_bytes and not head:
            raise UnreadableFile(path, f"{_a(what)} of at most {_size(max_bytes)}", f"it holds {_size(st.st_size)}")
        chunks, total = [], 0
        while total <= max_bytes:  # /proc-like files report size 0: stop at the cap all the same
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes and not head:
            raise UnreadableFile(path, f"{_a(what)} of at most {_size(max_bytes)}", "it holds more")
        return b"".join(chunks)[:max_bytes]
    except OSError as e:
        raise UnreadableFile(path, expected, e.strerror or str(e)) from None
    finally:
        os.close(fd)


def read_text(path: Union[str, Path], what: str = "text file", max_bytes: Optional[int] = None) -> str:
    """A regular file decoded as UTF-8 (a leading BOM dropped); binary data or another encoding is a ConfigError."""
    data = read_bytes(path, what, max_bytes)
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(str(path), f"byte {nul}", f"{_a(what)} (UTF-8 text)", "binary data (a NUL byte)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"byte {e.start}", f"{_a(what)} in UTF-8",
                          f"byte 0x{data[e.start]:02x}, not UTF-8") from None


def check_shape(value: Any, path: Union[str, Path], max_depth: Optional[int] = None, max_nodes: Optional[int] = None) -> Any:
    """Refuse a parsed document that nests too deep, refers to itself, or expands (through YAML aliases) to
    more nodes than any real file: later code walks it as a tree and must not recurse or loop without end."""
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    max_nodes = MAX_NODES if max_nodes is None else max_nodes
    seen_nodes = 0
    # iterative walk: (value, depth, ids of the containers above it)
    stack = [(value, 0, frozenset())]
    while stack:
        v, depth, above = stack.pop()
        seen_nodes += 1
        if seen_nodes > max_nodes:
            raise ConfigError(str(path), _WHERE, f"at most {max_nodes} values (YAML aliases expanded)", "more")
        if isinstance(v, dict):
            children = list(v.keys()) + list(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            children = list(v)
        else:
            continue
        if id(v) in above:
            raise ConfigError(str(path), _WHERE, "a document without recursive aliases", "an alias to itself")
        if depth >= max_depth:
            raise ConfigError(str(path), _WHERE, f"nesting at most {max_depth} deep", "deeper")
        inner = above | {id(v)}
        stack.extend((c, depth + 1, inner) for c in children)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, source: str) -> Any:
    """json.loads that rejects NaN/Infinity and over-deep nesting with a ConfigError naming source."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(source, f"line {e.lineno} column {e.colno}", "valid JSON", e.msg) from None
    except RecursionError:
        raise ConfigError(source, _WHERE, f"JSON nesting at most {MAX_DEPTH} deep", "deeper") from None
    except ValueError as e:  # NaN/Infinity, an integer of more digits than Python converts
        raise ConfigError(source, _WHERE, "valid JSON", str(e)) from None
    return check_shape(value, source)


_JSON_TYPES = {dict: "a JSON object", list: "a JSON array"}


def load_json(path: Union[str, Path], what: str = "JSON file", max_bytes: Optional[int] = None,
              top: Optional[type] = None) -> Any:
    """Read and parse a JSON file of sane size and shape; with top (dict or list), of that type at the top."""
    value = parse_json(read_text(path, what, max_bytes), str(path))
    if top is not None and not isinstance(value, top):
        raise ConfigError(str(path), "(top level)",
                          f"{_a(what)} holding {_JSON_TYPES.get(top, top.__name__)}, not {_json_name(value)}")
    return value


def _json_name(value: Any) -> str:
    for t, name in ((bool, "a JSON boolean"), (dict, "a JSON object"), (list, "a JSON array"), (str, "a JSON string"),
                    (int, "a JSON number"), (float, "a JSON number")):
        if isinstance(value, t):
            return name
    return "JSON null"


def kind(path: Union[str, Path]) -> Optional[str]:
    """What is at path without opening it ("a regular file", "a FIFO", "a directory", ...); None when nothing is."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "a regular file" if stat.S_ISREG(mode) else _kind(mode)


def _a(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"
