"""Reports printed in the terminal: Markdown, with its tables split into column groups that
fit the terminal (the first column repeated), so that no cell is cut short ("Im…") at 80
columns."""
from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_TABLE_LINE = re.compile(r"^\|.*\|\s*$")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_ALIGN_CELL = re.compile(r"^:?-{3,}:?$")
_BOLD = re.compile(r"^\*\*(.*)\*\*$")
# A column's frame in rich's SIMPLE_HEAVY table: one space either side and a separator.
_COLUMN_FRAME = 3


def _cells(line: str) -> list[str]:
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SEPARATOR.split(line.strip())[1:-1]]


def _text(cell: str) -> Text:
    bold = _BOLD.match(cell)
    return Text(bold.group(1), style="bold") if bold else Text(cell)


def _width_needed(column: list[str]) -> int:
    """The width a column needs: its widest cell, the header broken at spaces."""
    header, *cells = column
    return max([len(word) for word in _text(header).plain.split()] + [len(_text(cell).plain) for cell in cells] + [1])


def column_groups(widths: list[int], width: int) -> list[list[int]]:
    """Column indices per printed table: column 0 in every group, the others in order, as
    many per group as fit ``width`` (at least one, even if it alone is wider)."""
    groups: list[list[int]] = []
    used = width  # forces a new group for column 1
    for index in range(1, len(widths)):
        need = widths[index] + _COLUMN_FRAME
        if used + need > width:
            groups.append([0])
            used = 1 + widths[0] + _COLUMN_FRAME
        groups[-1].append(index)
        used += need
    return groups or [[0]]


def _print_table(console: Console, lines: list[str]) -> None:
    header, align, *rows = (_cells(line) for line in lines)
    right = [cell.endswith(":") for cell in align] if all(_ALIGN_CELL.match(cell) for cell in align) else [False] * len(header)
    columns = [[header[i]] + [row[i] if i < len(row) else "" for row in rows] for i in range(len(header))]
    widths = [_width_needed(column) for column in columns]
    for group in column_groups(widths, console.width):
        table = Table(box=box.SIMPLE_HEAVY, show_edge=False)
        for index in group:
            table.add_column(_text(header[index]), justify="right" if right[index] else "left", min_width=widths[index])
        for row in rows:
            table.add_row(*(_text(row[index]) if index < len(row) else Text("") for index in group))
        console.print(table)
        console.print()


def print_markdown(console: Console, text: str) -> None:
    """Print a Markdown report; its tables as column groups that fit the console."""
    from rich.markdown import Markdown  # imported here: the command line starts faster without it

    block: list[str] = []
    in_table = False
    for line in [*text.splitlines(), ""]:
        is_table = bool(_TABLE_LINE.match(line))
        if block and is_table != in_table:
            if in_table:
                _print_table(console, block)
            else:
                console.print(Markdown("\n".join(block)))
            block = []
        in_table = is_table
        block.append(line)
    if block and any(part.strip() for part in block):
        console.print(Markdown("\n".join(block)))
