"""Sanitize step: read a submission defensively and rebuild it on the release notebook's skeleton.

As nbgrader's OverwriteCells does, every provided cell (locked cells and test cells) is taken from
the release, whatever the student did to it; only solution cells and cells the student added come
from the submission. Edited, deleted, duplicated and reordered graded cells are reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from coursekit.grading.rubric import nbgrader_meta

MAX_NOTEBOOK_BYTES = 20 * 2**20


class UnreadableSubmission(Exception):
    """The submission cannot be read as a notebook; the message says why, for the student."""


@dataclass
class EditableCell:
    index: int            # position in the sanitized notebook
    source: str
    owner: str | None     # the solution cell it belongs to (itself, or the one above an added cell)


@dataclass
class Sanitized:
    notebook: nbformat.NotebookNode
    notes: list[str] = field(default_factory=list)
    editable: list[EditableCell] = field(default_factory=list)


def read_submission(path: Path) -> nbformat.NotebookNode:
    if not path.is_file():
        raise UnreadableSubmission(f"no notebook named {path.name} was submitted")
    raw = path.read_bytes()
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise UnreadableSubmission(f"the notebook is {len(raw) / 2**20:.0f} MiB, over the {MAX_NOTEBOOK_BYTES // 2**20} MiB limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableSubmission(f"the notebook is not UTF-8 text (byte {error.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableSubmission(f"the notebook is not valid JSON (line {error.lineno}, column {error.colno}): "
                                   f"{error.msg}; was it saved completely?") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise UnreadableSubmission("the file is JSON but not a Jupyter notebook (no list of cells)")
    try:
        notebook = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises many kinds for odd versions
        raise UnreadableSubmission(f"the notebook format is not supported ({error})") from None
    for cell in notebook.cells:
        if not isinstance(cell.get("source", ""), str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise UnreadableSubmission("the notebook has a malformed cell")
    return notebook


def grade_id(cell) -> str | None:
    value = nbgrader_meta(cell).get("grade_id")
    return value if isinstance(value, str) else None


def sanitize(submission: nbformat.NotebookNode, release: nbformat.NotebookNode) -> Sanitized:
    skeleton = [(grade_id(cell), cell) for cell in release.cells if grade_id(cell)]
    known = {gid for gid, _ in skeleton}
    theirs: dict[str, nbformat.NotebookNode] = {}
    added: dict[str | None, list] = {}  # cells the student added, by the known cell above them
    order, above, notes = [], None, []
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid in known and gid not in theirs:
            theirs[gid], above = cell, gid
            order.append(gid)
        else:
            if gid in known:
                notes.append(f"cell '{gid}' appears more than once; only the first copy was used")
            added.setdefault(above, []).append(cell)
    if order != [gid for gid, _ in skeleton if gid in theirs]:
        notes.append("graded cells were moved; they were put back in the assignment's order")

    result = Sanitized(nbformat.v4.new_notebook(metadata=release.metadata))

    def append_added(cells, owner):
        for extra in cells:
            result.notebook.cells.append(copy_added(extra, len(result.notebook.cells)))
            if extra.cell_type == "code":
                result.editable.append(EditableCell(len(result.notebook.cells) - 1, extra.source, owner))

    owner = None
    append_added(added.get(None, []), None)
    for gid, template in skeleton:
        meta = nbgrader_meta(template)
        cell = nbformat.from_dict(json.loads(json.dumps(template)))
        student = theirs.get(gid)
        if meta.get("solution"):
            owner = gid
            if student is None:
                notes.append(f"answer cell '{gid}' was deleted; the empty template was used")
            else:
                cell.source = student.source
        elif student is None:
            notes.append(f"provided cell '{gid}' was deleted; it was restored")
        elif student.source != template.source:
            notes.append(f"provided cell '{gid}' was edited; the original was restored and your changes were ignored")
        result.notebook.cells.append(cell)
        if meta.get("solution") and cell.cell_type == "code":
            result.editable.append(EditableCell(len(result.notebook.cells) - 1, cell.source, gid))
        append_added(added.get(gid, []), owner)
    first_solution = next((c.owner for c in result.editable if c.owner), None)
    for cell in result.editable:
        cell.owner = cell.owner or first_solution
    result.notes = notes
    return result


def copy_added(cell, position: int) -> nbformat.NotebookNode:
    """A cell the student added, without nbgrader metadata (so it can never pose as a graded cell)."""
    if cell.cell_type == "code":
        return nbformat.v4.new_code_cell(cell.source, id=f"added-{position}")
    return nbformat.v4.new_markdown_cell(cell.source, id=f"added-{position}")
