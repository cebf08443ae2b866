"""Markdown tables on narrow terminals: folded into narrower tables led by the key column, every
cell kept, no line wider than the console."""

from __future__ import annotations

import pytest
from rich.console import Console

from experiments.console import fold, parse, print_markdown

TABLE = "\n".join([
    "| policy | acc @ 5% | acc @ 10% | acc @ 15% | acc @ 20% | AIQ (acc vs cost) | APGR |",
    "|---|---|---|---|---|---|---|",
    "| confidence | 0.973 | 0.978 | 0.978 | 0.982 | 0.981 | n/a |",
    "| posthoc | 0.972 | 0.972 | 0.970 | 0.968 | 0.973 | n/a |",
])


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_no_line_is_wider_than_the_console_and_every_cell_is_printed(width: int) -> None:
    console = Console(width=width, record=True)
    print_markdown(console, "before\n" + TABLE + "\nafter")
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for cell in {cell for row in parse(TABLE.splitlines()) for cell in row}:
        assert cell in text
    assert text.index("before") < text.index("confidence") and text.rstrip().endswith("after")


def test_a_narrow_console_folds_the_table_and_repeats_the_key_column() -> None:
    rows = parse(TABLE.splitlines())
    assert len(fold(rows, 200)) == 1
    narrow = fold(rows, 40)
    assert len(narrow) > 1
    assert all(table.columns[0].header == "policy" for table in narrow)
    assert sum(len(table.columns) - 1 for table in narrow) == len(rows[0]) - 1  # each other column once
