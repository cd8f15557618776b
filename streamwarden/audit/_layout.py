"""Rows for a terminal: one table when the console is wide enough for it, else a block per row.

A table's columns are either fixed (ids, times, states: never wrapped, never folded) or free
text (owners, reasons: wrapped, a word too long for the column folded). The table is printed
when the fixed columns at their widest, the free-text columns at :data:`MIN_FREE_WIDTH` (or
narrower if nothing in them is wider) and the gaps between columns fit the console; otherwise
each row is printed as a block of labelled lines, where only a value too long for its line
wraps (a ULID never does: it is shorter than any console).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

#: Narrowest a free-text column is squeezed to before the rows are printed as blocks instead.
MIN_FREE_WIDTH = 10
#: Characters between two columns of :func:`make_table`: a cell's padding and the box's blank
#: divider.
GAP = 2
#: Indent of a block's labelled lines under its heading.
BLOCK_INDENT = 2


@dataclass(frozen=True)
class Column:
    """A table column: ``free`` text wraps, the others never do; ``right`` aligns numbers."""

    header: str
    free: bool = False
    right: bool = False


def _widest(index: int, header: str, rows: Sequence[Sequence[Text]]) -> int:
    return max([cell_len(header), *(row[index].cell_len for row in rows)])


def table_width(columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> int:
    """The console width the table of ``rows`` needs to be printed without wrapping a fixed
    column. Thread-safety: pure function."""
    width = GAP * (len(columns) - 1)
    for index, column in enumerate(columns):
        widest = _widest(index, column.header, rows)
        width += min(widest, MIN_FREE_WIDTH) if column.free else widest
    return width


def fits(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> bool:
    """Whether the table of ``rows`` fits ``console`` (:func:`table_width`).

    Thread-safety: pure function of the console's width.
    """
    return table_width(columns, rows) <= console.width


def make_table(columns: Sequence[Column], rows: Sequence[Sequence[Text]], *,
               title: str | None = None) -> Table:
    """A borderless table of ``rows`` under a header rule. Thread-safety: pure function."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=True, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left",
                         no_wrap=not column.free, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def make_block(heading: Text, fields: Sequence[tuple[str, Text]]) -> Group:
    """``heading`` (bold) over one indented line per ``(label, value)``, labels aligned; a
    value too long for the line wraps under itself. Thread-safety: pure function."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(overflow="fold")
    for label, value in fields:
        grid.add_row(label, value)
    bold = heading.copy()
    bold.stylize("bold")
    return Group(bold, Padding(grid, (0, 0, 1, BLOCK_INDENT), expand=False))


def print_rows(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Text]],
               blocks: Iterable[RenderableType], *, title: str | None = None) -> bool:
    """Print ``rows`` as a table under ``title`` if it :func:`fits` ``console``, else
    ``title`` and then ``blocks`` (a lazy iterable is consumed only then); returns whether it
    was the table.

    Thread-safety: as thread-safe as ``console``.
    """
    if fits(console, columns, rows):
        console.print(make_table(columns, rows, title=title))
        return True
    if title is not None:
        console.print(Text(title, style="italic"))
    for block in blocks:
        console.print(block)
    return False
