"""Untrusted text (class names, file names, bundle and host names from a report.json) made safe
for where it is shown: a terminal, a Markdown document.

The HTML report needs nothing here: its templates autoescape.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_hidden(char: str) -> bool:
    """Control characters (ESC, CR, NUL, ...), format characters (bidirectional overrides,
    zero-width marks) and line/paragraph separators: invisible, yet they move or hide text."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every hidden character written as its escape (`\\x1b`, `\\r`, `\\u202e`), so
    a terminal shows the text instead of obeying it."""
    return "".join(_escaped(c) if _is_hidden(c) else c for c in text)


_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(value: Any) -> Any:
    """A value as text that stays text inside Markdown (every variable of the Markdown templates
    passes here): no raw HTML (`<>&` escaped), no table cell broken (`|` escaped), no line break
    (control characters visible, so a name cannot start a heading or split a row), no link.
    Markdown's emphasis and `code` pass, so the report's own **bold** and `settings` still render.
    Numbers pass unchanged."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = visible(str(value).replace("\\", "\\\\"))
    text = "".join(_HTML.get(c, c) for c in text)
    text = text.replace("|", "\\|")
    return re.sub(r"\]([(\[:])", r"\\]\1", text)  # `](` `][` `]:` start a link or a link definition
