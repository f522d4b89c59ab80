"""Text made safe for a terminal: control characters shown, never obeyed.

Names come from VMM, notes from any operator who may add one, error text from remote systems.
Written raw, an ESC or CSI sequence clears or rewrites another operator's screen, a carriage
return overwrites the start of a line, a backspace erases, and a bidi override (U+202E) makes
``txt.exe`` read as ``exe.txt``. :func:`visible` writes each such character as a Python-style
escape (``\\x1b``, ``\\x9b``, ``\\r``, ``\\u202e``) instead. A line break is kept: every report
is several lines. ``--json`` output is not passed through here: ``json.dumps`` with its default
``ensure_ascii`` escapes every one of these already, and must stay exact.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "["
    "\x00-\x09\x0b-\x1f\x7f"  # C0 controls but the line feed, and DEL
    "\x80-\x9f"  # C1 controls (\x9b is a one-byte CSI)
    "\u061c\u180e"  # Arabic letter mark, Mongolian vowel separator
    "\u200b-\u200f"  # zero-width characters, left-to-right and right-to-left marks
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064\u2066-\u2069"  # invisible operators, bidi isolates
    "\ufeff\ufff9-\ufffb"  # byte order mark, interlinear annotation
    "\U000e0001\U000e0020-\U000e007f"  # tag characters
    "]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every character that would steer a terminal written as its escape."""
    return _UNSAFE.sub(_escape, text)


def is_safe(text: str) -> bool:
    return _UNSAFE.search(text) is None
