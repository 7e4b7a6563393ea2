"""Sanitize step: read a submission defensively and rebuild it on the release notebook's skeleton.

As nbgrader's OverwriteCells does, every provided cell (locked cells and test cells) is taken from
the release, whatever the student did to it; only solution cells and cells the student added come
from the submission. Edited, deleted, duplicated and reordered graded cells are reported.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from coursekit.grading.rubric import nbgrader_meta

MAX_NOTEBOOK_BYTES = 20 * 2**20


class UnreadableSubmission(Exception):
    """The submission cannot be read as a notebook; the message says why, for the student."""


class RefusedLink(UnreadableSubmission):
    """The notebook, or a folder on the way to it, is a link: a person should look at it."""


@dataclass
class EditableCell:
    index: int            # position in the sanitized notebook
    source: str
    owner: str | None     # the solution cell it belongs to (itself, or the one above an added cell)
    grade_id: str | None = None  # its own grade_id: a solution cell's; None for a cell the student added


@dataclass
class Sanitized:
    notebook: nbformat.NotebookNode
    notes: list[str] = field(default_factory=list)
    editable: list[EditableCell] = field(default_factory=list)


def refuse_links(path: Path, top: Path) -> None:
    """Refuse a symbolic link at top or anywhere below it on the way to path: through a link the
    grader would read a file that is not the student's (the instructor's solution, another student's)."""
    current = top
    for part in ("", *path.relative_to(top).parts):
        current = current / part
        if current.is_symlink():
            shown = current.relative_to(top.parent)
            raise RefusedLink(f"'{shown}' is a symbolic link; the grader reads only files stored in your "
                                       "submission itself, so nothing was graded")


def read_own_file(path: Path, top: Path | None) -> bytes:
    """The bytes of a regular file of the submission (`top`: the student's folder, when the grader reads it)."""
    if top is not None:
        refuse_links(path, top)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise UnreadableSubmission(f"no notebook named {path.name} was submitted") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableSubmission(f"{path.name} is not a regular file")
        if top is not None and info.st_nlink > 1:
            raise RefusedLink(f"{path.name} is a hard link to a file outside your submission; "
                                       "nothing was graded")
        raw = handle.read(MAX_NOTEBOOK_BYTES + 1)
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise UnreadableSubmission(f"the notebook is over the {MAX_NOTEBOOK_BYTES // 2**20} MiB limit")
    return raw


def read_submission(path: Path, top: Path | None = None) -> nbformat.NotebookNode:
    """Read a notebook defensively; with `top`, as the grader reads a submission (no links)."""
    raw = read_own_file(path, top)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableSubmission(f"the notebook is not UTF-8 text (byte {error.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableSubmission(f"the notebook is not valid JSON (line {error.lineno}, column {error.colno}): "
                                   f"{error.msg}; was it saved completely?") from None
    except RecursionError:
        raise UnreadableSubmission("the file is JSON nested too deeply to be a Jupyter notebook") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise UnreadableSubmission("the file is JSON but not a Jupyter notebook (no list of cells)")
    try:
        notebook = nbformat.reads(text, as_version=4)
    except RecursionError:
        raise UnreadableSubmission("the notebook's JSON is nested too deeply to be a Jupyter notebook") from None
    except Exception as error:  # nbformat raises many kinds for odd versions
        raise UnreadableSubmission(f"the notebook format is not supported ({error})") from None
    for cell in notebook.cells:
        if not isinstance(cell.get("source", ""), str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise UnreadableSubmission("the notebook has a malformed cell")
    return notebook


def grade_id(cell) -> str | None:
    value = nbgrader_meta(cell).get("grade_id")
    return value if isinstance(value, str) else None


@dataclass
class Matched:
    """The submission's cells against the release's graded cells."""
    theirs: dict[str, nbformat.NotebookNode] = field(default_factory=dict)  # grade_id -> the first copy
    added: dict[str | None, list] = field(default_factory=dict)  # cells the student added, by the graded cell above
    notes: list[str] = field(default_factory=list)


def match_cells(submission: nbformat.NotebookNode, skeleton: list[tuple[str, nbformat.NotebookNode]]) -> Matched:
    known, found, order, above = {gid for gid, _ in skeleton}, Matched(), [], None
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid in known and gid not in found.theirs:
            found.theirs[gid], above = cell, gid
            order.append(gid)
        else:
            if gid in known:
                found.notes.append(f"cell '{gid}' appears more than once; only the first copy was used")
            found.added.setdefault(above, []).append(cell)
    if order != [gid for gid, _ in skeleton if gid in found.theirs]:
        found.notes.append("graded cells were moved; they were put back in the assignment's order")
    return found


def graded_cell(gid: str, template, student, notes: list[str]) -> nbformat.NotebookNode:
    """The release's cell; for an answer cell, with the student's source."""
    cell = nbformat.from_dict(json.loads(json.dumps(template)))
    if nbgrader_meta(template).get("solution"):
        if student is None:
            notes.append(f"answer cell '{gid}' was deleted; the empty template was used")
        else:
            cell.source = student.source
    elif student is None:
        notes.append(f"provided cell '{gid}' was deleted; it was restored")
    elif not same_code(student.source, template.source):
        notes.append(f"provided cell '{gid}' was edited; the original was restored and your changes were ignored")
    return cell


def sanitize(submission: nbformat.NotebookNode, release: nbformat.NotebookNode) -> Sanitized:
    skeleton = [(gid, cell) for cell in release.cells if (gid := grade_id(cell))]
    matched = match_cells(submission, skeleton)
    result = Sanitized(nbformat.v4.new_notebook(metadata=release.metadata), notes=matched.notes)

    def append(cell, owner, editable: bool) -> None:
        result.notebook.cells.append(cell)
        if editable and cell.cell_type == "code":
            result.editable.append(EditableCell(len(result.notebook.cells) - 1, cell.source, owner, grade_id(cell)))

    def append_added(above, owner) -> None:
        for extra in matched.added.get(above, []):
            append(copy_added(extra, len(result.notebook.cells)), owner, editable=True)

    owner = None
    append_added(None, None)
    for gid, template in skeleton:
        owner = gid if nbgrader_meta(template).get("solution") else owner
        cell = graded_cell(gid, template, matched.theirs.get(gid), result.notes)
        append(cell, gid, editable=bool(nbgrader_meta(template).get("solution")))
        append_added(gid, owner)
    first_solution = next((c.owner for c in result.editable if c.owner), None)
    for editable_cell in result.editable:
        editable_cell.owner = editable_cell.owner or first_solution
    return result


def same_code(mine: str, theirs: str) -> bool:
    """Equal but for line endings and trailing whitespace (what editors and platforms change on save)."""
    def normal(text: str) -> list[str]:
        return [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").rstrip().split("\n")]
    return normal(mine) == normal(theirs)


def copy_added(cell, position: int) -> nbformat.NotebookNode:
    """A cell the student added, without nbgrader metadata (so it can never pose as a graded cell)."""
    if cell.cell_type == "code":
        return nbformat.v4.new_code_cell(cell.source, id=f"added-{position}")
    return nbformat.v4.new_markdown_cell(cell.source, id=f"added-{position}")
