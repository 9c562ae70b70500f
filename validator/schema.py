"""Small typed readers for YAML data: each failure is a ConfigError naming file, key path and what was expected."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Optional, Tuple, Union

import yaml

from validator import userfile
from validator.errors import ConfigError

_MISSING = object()

# libyaml parses the shipped ID lists ~13x faster than pure Python; a node's CLI start-up pays for it.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, source: str = "<yaml>", key: Optional[str] = None) -> Any:
    """yaml.safe_load with libyaml when present; any parse failure, a huge alias expansion or over-deep nesting
    is a ConfigError naming source (never a traceback: bad dates raise ValueError deep inside PyYAML)."""
    try:
        value = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "(file)"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if key is not None:
            problem = f"{problem} ({line})"
        raise ConfigError(source, key or line, "valid YAML", problem) from None
    except RecursionError:
        raise ConfigError(source, key or "(file)", f"YAML nesting at most {userfile.MAX_DEPTH} deep", "deeper") from None
    except Exception as e:  # PyYAML's constructors raise ValueError, IndexError, ... on values like `!!int ''`
        raise ConfigError(source, key or "(file)", "valid YAML values", f"{type(e).__name__}: {e}") from None
    return userfile.check_shape(value, source)


def load_yaml(path: Union[str, Path], mapping: bool = True, what: str = "YAML file") -> Any:
    """Parse a YAML file a user can name: a regular UTF-8 file of bounded size (never a blocking FIFO), valid YAML
    of sane shape and, unless mapping=False, a mapping at the top; anything else is a ConfigError naming the file."""
    value = parse_yaml(userfile.read_text(path, what), str(path))
    if mapping and not isinstance(value, Mapping):
        got = "an empty file" if value is None else f"{type(value).__name__} {_short(value)}"
        raise ConfigError(str(path), "(top level)", "a mapping of keys to values", got)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Reader:
    """A cursor into parsed YAML: `r.key("gpus").index(3).key("peak_tflops")` tracks the key path for errors."""

    def __init__(self, file: str, value: Any, path: str = ""):
        self.file = file
        self.value = value
        self.path = path

    def fail(self, expected: str, got: Any = _MISSING, key: Optional[str] = None) -> ConfigError:
        where = key if key is not None else (self.path or "(top level)")
        return ConfigError(self.file, where, expected, None if got is _MISSING else got)

    def _child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def mapping(self, allowed: Optional[Collection[str]] = None) -> "Reader":
        """Assert a mapping; with `allowed`, unknown keys (typos) are errors too."""
        if not isinstance(self.value, Mapping):
            raise self.fail("a mapping", self.value)
        if allowed is not None:
            for k in self.value:
                if k not in allowed:
                    raise self.fail(f"one of the keys {', '.join(sorted(allowed))}", k, key=self._child_path(str(k)))
        return self

    def key(self, name: str, default: Any = _MISSING) -> "Reader":
        self.mapping()
        if name not in self.value:
            if default is _MISSING:
                raise self.fail("this key to be present", key=self._child_path(name))
            return Reader(self.file, default, self._child_path(name))
        return Reader(self.file, self.value[name], self._child_path(name))

    def items(self) -> Iterator[Tuple[str, "Reader"]]:
        self.mapping()
        for k, v in self.value.items():
            yield str(k), Reader(self.file, v, self._child_path(str(k)))

    def list(self, nonempty: bool = False) -> Iterator["Reader"]:
        if not isinstance(self.value, list) or (nonempty and not self.value):
            raise self.fail("a non-empty list" if nonempty else "a list", self.value)
        for i, v in enumerate(self.value):
            yield Reader(self.file, v, f"{self.path}[{i}]")

    def str(self, choices: Optional[Collection[str]] = None, nonempty: bool = True) -> str:
        v = self.value
        if not isinstance(v, str) or (nonempty and not v.strip()):
            raise self.fail("a non-empty string" if nonempty else "a string", v)
        if choices is not None and v not in choices:
            raise self.fail(f"one of {', '.join(choices)}", v)
        return v

    def int(self, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(_range_text("an integer", lo, hi), v)
        return v

    def number(self, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
        """A finite number (YAML's .inf and .nan are refused: nan passes every range test) within lo..hi."""
        v = self.value
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(_range_text("a finite number", lo, hi), v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (lo is not None and v < lo) or (
            hi is not None and v > hi
        ):
            raise self.fail(_range_text("a number", lo, hi), v)
        try:
            return float(v)
        except OverflowError:  # an integer of 400 digits
            raise self.fail(_range_text("a number", lo, hi), f"an integer of {len(str(v))} digits") from None

    def bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail("true or false", self.value)
        return self.value

    def optional(self) -> Optional["Reader"]:
        return None if self.value is None else self


def _range_text(kind: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind
