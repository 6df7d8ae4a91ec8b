"""Text that came from an agent (archive names, versions, messages) is data, never terminal
commands or Rich markup: control characters are shown escaped, and callers hand the result
to Rich as Text (or through rich.markup.escape), never as markup."""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (ESC starts a terminal escape sequence; CSI is \x9b).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: object) -> str:
    """`text` with every control character shown as its \\x.. escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def cell(text: object, style: str = ""):
    """A Rich Text of the plain text: Rich does not parse it for markup."""
    from rich.text import Text

    return Text(plain(text), style=style)
