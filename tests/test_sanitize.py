"""Sanitize step: defensive reading and rebuilding a submission on the release skeleton."""
from __future__ import annotations

import json

import nbformat
import pytest

from coursekit.grading.sanitize import UnreadableSubmission, read_submission, sanitize


def cell(kind, source, grade_id=None, **flags):
    new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    result = new(source)
    if grade_id:
        result.metadata["nbgrader"] = {"schema_version": 3, "grade_id": grade_id, "grade": False,
                                       "solution": False, "locked": False, "task": False, **flags}
    return result


@pytest.fixture
def release():
    return nbformat.v4.new_notebook(cells=[
        cell("code", "import torch", "data_load", locked=True),
        cell("code", "def f():\n    raise NotImplementedError()", "answer", solution=True),
        cell("code", "assert f() == 1", "test_f", grade=True, locked=True, points=2),
        cell("markdown", "YOUR ANSWER HERE", "essay", solution=True, grade=True, points=3),
    ])


def submission_from(release, edit):
    notebook = nbformat.from_dict(json.loads(json.dumps(release)))
    edit(notebook.cells)
    return notebook


def sources(sanitized):
    return [c.source for c in sanitized.notebook.cells]


def test_answers_are_kept_and_provided_cells_restored(release):
    def edit(cells):
        cells[1].source = "def f():\n    return 1"
        cells[2].source = "pass  # no more test"
        cells[0].source = "import torch.nn"
    result = sanitize(submission_from(release, edit), release)
    assert sources(result) == ["import torch", "def f():\n    return 1", "assert f() == 1", "YOUR ANSWER HERE"]
    assert any("'test_f' was edited" in note for note in result.notes)
    assert any("'data_load' was edited" in note for note in result.notes)
    assert [(c.index, c.owner) for c in result.editable] == [(1, "answer")]


def test_deleted_cells_are_restored_and_reported(release):
    result = sanitize(submission_from(release, lambda cells: cells.__delitem__(slice(1, 3))), release)
    assert sources(result)[:3] == ["import torch", "def f():\n    raise NotImplementedError()", "assert f() == 1"]
    assert any("answer cell 'answer' was deleted" in n for n in result.notes)
    assert any("provided cell 'test_f' was deleted" in n for n in result.notes)


def test_added_cells_stay_below_their_cell_and_belong_to_it(release):
    def edit(cells):
        cells.insert(2, cell("code", "helper = 1"))
        cells.insert(0, cell("code", "x = 0"))
    result = sanitize(submission_from(release, edit), release)
    assert sources(result)[:4] == ["x = 0", "import torch", "def f():\n    raise NotImplementedError()", "helper = 1"]
    assert [(c.source, c.owner) for c in result.editable] == [
        ("x = 0", "answer"),
        ("def f():\n    raise NotImplementedError()", "answer"),
        ("helper = 1", "answer"),
    ]
    assert "nbgrader" not in result.notebook.cells[0].metadata


def test_reordered_and_duplicated_cells_are_reported(release):
    def edit(cells):
        cells[1], cells[2] = cells[2], cells[1]
        cells.append(nbformat.from_dict(json.loads(json.dumps(cells[0]))))
    result = sanitize(submission_from(release, edit), release)
    assert sources(result)[:3] == ["import torch", "def f():\n    raise NotImplementedError()", "assert f() == 1"]
    assert any("moved" in n for n in result.notes)
    assert any("'data_load' appears more than once" in n for n in result.notes)


def test_forged_graded_cell_added_by_student_loses_its_metadata(release):
    forged = cell("code", "x = 1", "not_in_release", grade=True, points=100)
    result = sanitize(submission_from(release, lambda cells: cells.append(forged)), release)
    assert result.notebook.cells[-1].source == "x = 1"
    assert "nbgrader" not in result.notebook.cells[-1].metadata


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b'{"cells": [', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"hello": 1}', "not a Jupyter notebook"),
    (b'[1, 2]', "not a Jupyter notebook"),
    (b'{"cells": [], "nbformat": 99, "nbformat_minor": 0, "metadata": {}}', "not supported"),
])
def test_unreadable_files_get_a_clear_message(tmp_path, content, message):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(UnreadableSubmission, match=message):
        read_submission(path)


def test_missing_notebook_is_reported(tmp_path):
    with pytest.raises(UnreadableSubmission, match="no notebook named nb.ipynb"):
        read_submission(tmp_path / "nb.ipynb")


def test_old_nbformat_is_upgraded(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), path, version=3)
    assert json.loads(path.read_text())["nbformat"] == 3
    assert read_submission(path).cells[0].source == "1"


@pytest.fixture
def student_folder(tmp_path, release):
    """submitted/<student>/assignment/ beside a file outside the submission (the instructor's solution)."""
    solution = tmp_path / "source" / "nb.ipynb"
    solution.parent.mkdir()
    nbformat.write(release, solution)
    folder = tmp_path / "submitted" / "student" / "assignment"
    folder.mkdir(parents=True)
    return folder, solution


def test_a_symlinked_notebook_is_never_read(student_folder):
    folder, solution = student_folder
    (folder / "nb.ipynb").symlink_to(solution)
    with pytest.raises(UnreadableSubmission, match="'student/assignment/nb.ipynb' is a symbolic link"):
        read_submission(folder / "nb.ipynb", top=folder.parent)


def test_a_symlinked_assignment_folder_is_never_read(student_folder):
    folder, solution = student_folder
    folder.rmdir()
    folder.symlink_to(solution.parent)
    with pytest.raises(UnreadableSubmission, match="'student/assignment' is a symbolic link"):
        read_submission(folder / "nb.ipynb", top=folder.parent)


def test_a_hard_linked_notebook_is_never_read(student_folder):
    folder, solution = student_folder
    (folder / "nb.ipynb").hardlink_to(solution)
    with pytest.raises(UnreadableSubmission, match="hard link to a file outside your submission"):
        read_submission(folder / "nb.ipynb", top=folder.parent)


def test_the_students_own_file_is_read(student_folder, release):
    folder, _ = student_folder
    nbformat.write(release, folder / "nb.ipynb")
    assert len(read_submission(folder / "nb.ipynb", top=folder.parent).cells) == len(release.cells)


def test_deeply_nested_json_is_not_a_notebook(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text('{"cells": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(UnreadableSubmission, match="nested too deeply"):
        read_submission(path)


def test_line_endings_and_trailing_spaces_are_not_edits(release):
    crlf = submission_from(release, lambda cells: [c.update(source=c.source.replace("\n", "\r\n") + "  \r\n")
                                                   for c in cells])
    assert not [note for note in sanitize(crlf, release).notes if "edited" in note]
    edited = submission_from(release, lambda cells: cells[2].update(source="assert True"))
    assert [note for note in sanitize(edited, release).notes if "'test_f' was edited" in note]
