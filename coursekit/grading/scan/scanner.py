"""Entry points: scan a notebook's editable cells, find large literals.

:func:`scan_cells` prepares every cell (:mod:`.cells`), collects what the
student defines (:mod:`.facts`), expands the magics (:mod:`.magics`), walks
the preamble silently to learn its names, then walks the student's cells in
order (:mod:`.visitor`).  It never
raises: a cell the scanner cannot handle is reported for a person to review.
"""

from __future__ import annotations

import ast
from typing import Iterable

from .cells import PARSE_ERRORS, Broken, prepare, source_text, split_lines, units
from .facts import Facts
from .findings import MAX_LITERAL_CHARS, SUSPICIOUS, UNPARSABLE, Finding, ScanPolicy
from .magics import expand
from .visitor import Walker


def _cell_list(cells) -> list[tuple[int, str]]:
    out = []
    for entry in cells:
        try:
            idx, src = entry
        except Exception:
            continue
        out.append((idx, source_text(src)))
    return out


def _prepare_cell(src: str) -> list:
    try:
        return prepare(src)
    except Exception as e:  # pragma: no cover - defensive
        return [Broken(1, f"internal scanner error: {type(e).__name__}", syntax=False)]


def _facts(item_lists: list) -> Facts:
    facts = Facts()
    for items in item_lists:
        for unit in units(items):
            try:
                facts.add(unit.tree)
            except Exception:  # pragma: no cover - defensive
                pass
    return facts


def _walk_preamble(walker: Walker, preamble: str, items: list) -> None:
    walker.reporting = False
    walker.cell_lines = split_lines(source_text(preamble))
    try:
        walker.run_steps(expand(items))
    except Exception:  # pragma: no cover - defensive
        walker.resolver.reset()
    walker.reporting = True


def _walk_cell(walker: Walker, idx: int, src: str, items: list) -> None:
    walker.cell = idx
    walker.cell_lines = split_lines(src)
    try:
        walker.run_steps(expand(items))
    except Exception as e:  # never raise: hand the cell to a person
        walker.resolver.reset()
        walker.findings.setdefault((idx, 1, "syntax"), Finding(
            UNPARSABLE, "syntax", idx, 1,
            f"This cell could not be checked automatically (internal scanner error: "
            f"{type(e).__name__}); a person will review it.", "scanner"))


def scan_cells(cells: Iterable[tuple[int, str]], policy: ScanPolicy = ScanPolicy(),
               preamble: str = "") -> list[Finding]:
    """Scan student-editable code cells (``(index, source)`` in notebook order).

    ``preamble`` is the source of the provided (locked) cells: its imports
    define names in scope but it is never reported on.  Returns findings
    sorted by (cell, line), one per (cell, line, rule).  Never raises.
    """
    cell_list = _cell_list(cells)
    try:
        pre_items = prepare(source_text(preamble)) if preamble else []
    except Exception:
        pre_items = []
    prepared = [(idx, src, _prepare_cell(src)) for idx, src in cell_list]
    facts = _facts([pre_items] + [items for _, _, items in prepared])
    walker = Walker(policy if isinstance(policy, ScanPolicy) else ScanPolicy(), facts)
    _walk_preamble(walker, preamble, pre_items)
    for idx, src, items in prepared:
        _walk_cell(walker, idx, src, items)
    findings = list(walker.findings.values()) + large_literals(cell_list)
    return sorted(findings, key=lambda f: (f.cell, f.line, f.rule))


def large_literals(cells: list[tuple[int, str]]) -> list[Finding]:
    """One finding per cell that carries a very long string or bytes literal (an encoded blob)."""
    found = []
    for idx, src in cells:
        try:
            tree = ast.parse(src)
        except PARSE_ERRORS:
            continue  # IPython syntax or broken code: the walker reports what it can
        blob = next((node for node in ast.walk(tree) if isinstance(node, ast.Constant)
                     and isinstance(node.value, (str, bytes))
                     and len(node.value) > MAX_LITERAL_CHARS), None)
        if blob is not None and isinstance(blob.value, (str, bytes)):  # always a str or bytes, as found
            found.append(Finding(SUSPICIOUS, "encoded-blob", idx, blob.lineno,
                                 f"a literal of {len(blob.value):,} characters: encoded data "
                                 "(weights?) in a cell is reviewed by a person", "large_literals"))
    return found
