"""The console's CSV export opens in a spreadsheet as text, never as a formula."""

from __future__ import annotations

import csv
import io

import pytest

from connectors.console.export import to_csv


@pytest.mark.parametrize(
    "cell", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
)
def test_usage_csv_prefixes_cells_a_spreadsheet_would_read_as_formulas(cell: str) -> None:
    text = to_csv(["account", "value"], [[cell, "12"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["'" + cell, "12"]


def test_usage_csv_keeps_plain_cells_and_exact_decimals_as_they_are() -> None:
    text = to_csv(["timestamp", "value"], [["2026-11-26T00:00:00Z", "12000.5"], [None, 0]])
    assert list(csv.reader(io.StringIO(text))) == [
        ["timestamp", "value"],
        ["2026-11-26T00:00:00Z", "12000.5"],
        ["", "0"],
    ]


def test_usage_csv_prefixes_a_formula_in_the_header_too() -> None:
    assert to_csv(["=cmd"], []).startswith("'=cmd")
