"""Markdown tables on a terminal of any width: a table wider than the console is folded into
several narrower ones, each repeating the first (key) column, instead of wrapping mid-row.

>>> import io
>>> from rich.console import Console
>>> console = Console(width=40, record=True, file=io.StringIO())
>>> print_markdown(console, "| policy | acc @ 5% | acc @ 10% | acc @ 20% |\\n|---|---|---|---|\\n"
...                         "| confidence | 0.951 | 0.962 | 0.975 |")
>>> all(len(line) <= 40 for line in console.export_text().splitlines())
True
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

PADDING = 3
"""columns a cell takes beyond its text (padding and separator)"""


def print_markdown(console: Console, text: str) -> None:
    """Print ``text``: its markdown tables folded to ``console.width``, the other lines as they are."""
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if block:
            for table in fold(parse(block), console.width):
                console.print(table)
                console.print()
            block = []
        if line.strip():
            console.print(line, highlight=False)


def parse(lines: list[str]) -> list[list[str]]:
    """Rows of cells of a markdown table (the ``|---|`` rule dropped)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return [row for row in rows if not all(set(cell) <= set("-: ") for cell in row)]


def fold(rows: list[list[str]], width: int) -> list[Table]:
    """The table as one or more tables no wider than ``width``, each led by the first column."""
    header, body = rows[0], rows[1:]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) + PADDING for i in range(len(header))]
    groups: list[list[int]] = []
    for column in range(1, len(header)):
        if groups and widths[0] + sum(widths[c] for c in groups[-1]) + widths[column] <= width:
            groups[-1].append(column)
        else:
            groups.append([column])
    tables = []
    for group in groups or [[]]:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in (0, *group):
            table.add_column(header[column], justify="left" if column == 0 else "right")
        for row in body:
            table.add_row(*(row[c] if c < len(row) else "" for c in (0, *group)))
        tables.append(table)
    return tables
