"""Text the staff reads, made inert: a CSV cell a spreadsheet will not run as a formula (OWASP's rule
for CSV injection), and student text that cannot start a line of its own in a report, so an exception
message cannot pass for one of the grader's lines."""
from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path
from typing import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
SHOWN_BREAK = " ⏎ "


def csv_cell(value: object) -> str:
    """The cell as text; one that starts like a formula gets a leading apostrophe (a negative number,
    such as a late penalty of -1.5, stays a number)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_csv(path: Path, rows: Iterable[Iterable[object]]) -> None:
    """Rows (the header first) with every cell made inert."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([csv_cell(value) for value in row] for row in rows)


def one_line(text: object) -> str:
    """Text on one line: line breaks shown as ⏎, other control characters dropped."""
    joined = LINE_BREAKS.sub(SHOWN_BREAK, str(text))
    return "".join(" " if char == "\t" else char for char in joined
                   if char == "\t" or unicodedata.category(char) != "Cc")
