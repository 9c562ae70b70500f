"""Text from a node (hostname, GPU names, kernel log lines) made safe to print or to put in XML.

A node's /etc/hostname or a log line can hold terminal escape sequences (retitle the window, hide text,
repaint a FAIL as a PASS), carriage returns that overwrite a line, bidi overrides that reorder it, and
characters XML 1.0 cannot carry at all. Renderers pass every node-given string through one of these.
"""

from __future__ import annotations

import re

# C0 controls but tab, DEL, C1 controls (0x9b is a one-byte CSI), Unicode line/paragraph separators, bidi
# embeddings/overrides/isolates, lone surrogates (no encoder can print them): none belongs in a one-line field.
_UNSAFE_TERM = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What XML 1.0 allows: #x9 #xA #xD [#x20-#xD7FF] [#xE000-#xFFFD] [#x10000-#x10FFFF]; lone surrogates are out too.
_UNSAFE_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(m: "re.Match[str]") -> str:
    c = m.group(0)
    return {"\n": "\\n", "\r": "\\r"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def term(text: object) -> str:
    """One line safe for a terminal: control characters shown as visible escapes (\\x1b, \\n), tabs as spaces."""
    s = str(text)
    return _UNSAFE_TERM.sub(_escape, s).replace("\t", " ")


def lines(text: object) -> str:
    """Like term() but keeps line breaks (an error message with its hint and the tail of a command's output)."""
    return "\n".join(term(line) for line in str(text).split("\n"))


def xml(text: object) -> str:
    """Only characters XML 1.0 can carry (others as visible escapes); markup escaping stays the caller's job."""
    return _UNSAFE_XML.sub(_escape, str(text))
