"""Long tables as aligned columns, written in one go.

Rich's Table measures, wraps and pads every cell through its renderable protocol: a
10,000-host `saveos status --all` spent 14 s of CPU in it, `saveos agents list --all` 5 s.
Past LONG_TABLE rows the CLI draws the same columns as aligned text instead: widths from
rich.cells.cell_len, each distinct cell's colours rendered once by Rich for the console's
colour system (none when piped or NO_COLOR), every line written at once. A recording console
(--svg, --html) gets the same layout as one Rich Text, so the export shows what the terminal
does. Cells are str or rich Text (agent text goes through safe_text.cell first, as anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

LONG_TABLE = 200
GAP = "  "
# Console.color_system's names -> the ColorSystem Style.render takes.
COLOR_SYSTEMS = {"standard": "STANDARD", "256": "EIGHT_BIT", "truecolor": "TRUECOLOR"}


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # right-justified (sizes)


def is_long(rows: Sequence) -> bool:
    return len(rows) > LONG_TABLE


def print_columns(
    out: Console,
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    caption: str | None = None,
) -> None:
    # Rich only here: `status --json` imports this module and never draws.
    from rich.cells import cell_len
    from rich.text import Text

    plain = [[c.plain if isinstance(c, Text) else c for c in row] for row in rows]
    widths = [cell_len(col.header) for col in columns]
    # cell_len is exact for any text; ASCII (most cells) is one column a character.
    lengths = [[len(c) if c.isascii() else cell_len(c) for c in row] for row in plain]
    for row in lengths:
        widths = [max(w, n) for w, n in zip(widths, row, strict=True)]
    header = [Text(col.header, style="bold") for col in columns]
    every = [(header, [cell_len(c.header) for c in columns]), *zip(rows, lengths, strict=True)]
    if title:
        out.print(Text(title, style="italic"), soft_wrap=True)
    if out.record:
        text = Text()
        for row, row_lengths in every:
            for i, (value, n) in enumerate(zip(row, row_lengths, strict=True)):
                left, right = _pads(columns, widths, i, n)
                text.append(left)
                if isinstance(value, Text):
                    text.append_text(value)
                else:
                    text.append(value)
                text.append(right)
            text.append("\n")
        out.print(text, soft_wrap=True, end="")
    else:
        rendered: dict[tuple, str] = {}
        lines = []
        for row, row_lengths in every:
            parts = []
            for i, (value, n) in enumerate(zip(row, row_lengths, strict=True)):
                left, right = _pads(columns, widths, i, n)
                if isinstance(value, str):
                    parts += (left, value, right)
                elif not value.style and not value.spans:
                    parts += (left, value.plain, right)
                else:
                    parts += (left, _ansi(out, value, rendered), right)
            lines.append("".join(parts))
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
    if caption:
        out.print(Text(caption, style="dim italic"), soft_wrap=True)


def _pads(columns: Sequence[Column], widths: list[int], i: int, n: int) -> tuple[str, str]:
    fill = " " * (widths[i] - n)
    gap = GAP if i < len(columns) - 1 else ""
    if columns[i].right:
        return fill, gap
    return "", fill.rstrip() if not gap else fill + gap


def _ansi(out: Console, value: Text, rendered: dict) -> str:
    """A Text cell as the terminal shows it, rendered by Rich once per distinct cell."""
    from rich.color import ColorSystem

    spans = tuple((s.start, s.end, str(s.style)) for s in value.spans) if value.spans else ()
    key = (value.plain, str(value.style), spans)
    hit = rendered.get(key)
    if hit is None:
        name = None if out.no_color else COLOR_SYSTEMS.get(out.color_system or "")
        system = ColorSystem[name] if name else None
        # Text.render leaves the Text's own style to the caller (Console.print adds it).
        base = out.get_style(value.style) if value.style else None
        parts = []
        for seg in value.render(out):
            style = base + seg.style if base and seg.style else base or seg.style
            parts.append(style.render(seg.text, color_system=system) if style else seg.text)
        hit = "".join(parts)
        rendered[key] = hit
    return hit
