"""Terminal text that fits: every line the CLIs print stays within 120 columns (long ones wrap, hanging indent).
Callers wrap plain text, then colour it: ANSI codes are not counted here."""

from __future__ import annotations

import re
import textwrap
from typing import Iterable, List, Optional

WIDTH = 120
_LABEL = re.compile(r"^(\S[^:]{0,20}:\s+)")  # "Recommended: ", "Driver:      " ...


def fit(line: str, width: int = WIDTH, indent: Optional[int] = None) -> List[str]:
    """One line as one or more lines of at most `width` columns; continuation lines are indented by `indent`,
    else to the text after a 'Label:  ' prefix, else to the line's own indentation + 4."""
    if len(line) <= width:
        return [line]
    if indent is None:
        m = _LABEL.match(line)
        indent = len(m.group(1)) if m else len(line) - len(line.lstrip()) + 4
    indent = min(indent, width // 2)
    return textwrap.wrap(line, width=width, subsequent_indent=" " * indent, break_on_hyphens=False) or [line]


def fit_all(lines: Iterable[str], width: int = WIDTH) -> List[str]:
    out: List[str] = []
    for line in lines:
        out.extend(fit(line, width))
    return out


def fit_text(text: str, width: int = WIDTH) -> str:
    """Every line of text fitted; a trailing newline kept."""
    return "\n".join(fit_all(text.splitlines(), width)) + ("\n" if text.endswith("\n") else "")
