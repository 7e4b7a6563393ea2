"""coursekit similarity: copies with renamed variables are found, honest independent solutions are not,
and the template everyone was given never counts."""
from __future__ import annotations

import ast
import csv
import shutil

import nbformat
import pytest
from independent_solution import independent_solution

from conftest import RELEASE, ROOT
from coursekit.cli import main
from coursekit.config import Course
from coursekit.course.similarity import THRESHOLD, boilerplate_hashes, compare_class, read_class
from coursekit.examples import solved

RENAMES = {"x": "inputs", "grad_out": "upstream", "generator": "rng", "losses": "epoch_losses", "total": "acc",
           "order": "perm", "batch": "idx", "layer": "lyr", "shifted": "centred", "grad": "dlogits", "n": "count",
           "diff": "delta", "rows": "row_ids", "g": "gen", "history": "curve", "chunk": "ids", "running": "summed",
           "lp": "logp", "top": "peak", "hidden": "width", "perm": "shuffled", "centred": "moved"}


class Renamer(ast.NodeTransformer):
    """Renames local variables; a function's parameters keep their names (callers pass them by keyword)."""

    def __init__(self, keep: set[str]):
        self.keep = keep

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in RENAMES and node.id not in self.keep:
            node.id = RENAMES[node.id]
        return node


def disguised(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy as a student hides one: local variables renamed, comments dropped, the code re-laid out
    (every solution cell parsed and written back)."""
    copy = nbformat.reads(nbformat.writes(notebook), as_version=4)
    for cell in copy.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            tree = ast.parse(cell.source)
            parameters = {arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
                          for arg in [*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg] if arg}
            cell.source = ast.unparse(Renamer(parameters).visit(tree))
    return copy


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    root = tmp_path_factory.mktemp("course")
    for folder in ("release", "fundamentals"):
        shutil.copytree(ROOT / folder, root / folder)
    course = Course(root)
    release = nbformat.read(RELEASE, as_version=4)
    honest = {"ann": solved(Course(ROOT)), "ben": independent_solution(release)}
    notebooks = {**honest, "cat": disguised(honest["ann"]), "dan": disguised(honest["ben"]), "eve": release}
    for student, notebook in notebooks.items():
        course.submission(student).mkdir(parents=True)
        nbformat.write(notebook, course.submission(student) / course.notebook_name)
    course.submission("fay").mkdir(parents=True)
    (course.submission("fay") / course.notebook_name).write_text('{"cells": [')
    return course


@pytest.fixture(scope="module")
def pairs(course):
    codes, notes = read_class(course, course.students())
    assert [code.student for code in codes] == ["ann", "ben", "cat", "dan", "eve"] and notes[0].startswith(
        "fay: not compared"
    )
    return {(p.first.student, p.second.student): p for p in compare_class(codes, boilerplate_hashes(course))}


def test_copies_with_renamed_variables_are_found(pairs):
    assert {names for names, pair in pairs.items() if pair.share >= THRESHOLD} == {("ann", "cat"), ("ben", "dan")}
    assert min(pairs["ann", "cat"].shares + pairs["ben", "dan"].shares) > 0.95


def test_honest_independent_solutions_stay_well_under_the_threshold(pairs):
    assert pairs["ann", "ben"].share < THRESHOLD / 1.5  # measured: 0.23 and 0.21 of each one's code


def test_the_template_everyone_was_given_does_not_count(pairs):
    assert all(pair.shares[1] == 0 for names, pair in pairs.items() if names[1] == "eve")


def test_the_report_lists_the_pairs_with_their_matching_cells_offline(course, capsys):
    assert main(["--root", str(course.root), "similarity"]) == 0
    out = capsys.readouterr().out
    assert (
        out.splitlines()[-1]
        == "2 of 10 pairs of 5 students at or over 50%; report: similarity/report.html, similarity/pairs.csv"
    )
    with open(course.root / "similarity" / "pairs.csv", newline="") as handle:
        rows = {(row["student_a"], row["student_b"]): row for row in csv.DictReader(handle)}
    assert set(rows) == {("ann", "cat"), ("ben", "dan")}
    assert rows["ben", "dan"]["cells_a"].split()[:3] == ["linear", "relu", "sequential"]
    page = (course.root / "similarity" / "report.html").read_text()
    assert page.count("<mark>") >= 2 and "<script" not in page and "http:" not in page and "https:" not in page
    assert "&lt;" in page or "&#" in page  # the students' code is escaped


def test_pairs_with_nothing_in_common_can_be_listed_too(course, capsys):
    assert main(["--root", str(course.root), "similarity", "ann", "eve", "--threshold", "0"]) == 0
    assert "1 of 1 pairs of 2 students at or over 0%" in capsys.readouterr().out
