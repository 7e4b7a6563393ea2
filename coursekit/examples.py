"""Example submissions, derived from the source notebook: the demo's data and the tests' fixtures.

`solved()` is what a student who got everything right hands in: the release notebook with every
solution cell filled in from the source. Each example is that notebook with a few edits.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import nbformat

from coursekit.config import Course
from coursekit.grading.rubric import nbgrader_meta

MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)

Edit = Callable[[nbformat.NotebookNode, nbformat.NotebookNode], None]  # (notebook, release)


def cell(notebook, grade_id: str):
    return next(c for c in notebook.cells if nbgrader_meta(c).get("grade_id") == grade_id)


def solved(course: Course) -> nbformat.NotebookNode:
    source = nbformat.read(course.source_notebook, as_version=4)
    notebook = nbformat.read(course.release_notebook, as_version=4)
    for target in notebook.cells:
        meta = nbgrader_meta(target)
        if meta.get("solution"):
            target.source = MARKER.sub("", cell(source, meta["grade_id"]).source)
    return notebook


def replace(grade_id: str, old: str, new: str) -> Edit:
    """Change the student's code in one cell (the text must be there)."""
    def edit(notebook, release):
        target = cell(notebook, grade_id)
        if old not in target.source:
            raise ValueError(f"{old!r} is not in cell {grade_id}")
        target.source = target.source.replace(old, new)
    return edit


def stub(grade_id: str) -> Edit:
    """Leave one answer cell as the release has it (not attempted)."""
    def edit(notebook, release):
        cell(notebook, grade_id).source = cell(release, grade_id).source
    return edit


def add_after(grade_id: str, code: str) -> Edit:
    """A cell the student added below a cell."""
    def edit(notebook, release):
        position = notebook.cells.index(cell(notebook, grade_id)) + 1
        notebook.cells.insert(position, nbformat.v4.new_code_cell(code, id=f"added-after-{grade_id}"))
    return edit


def rewrite(grade_id: str, code: str) -> Edit:
    """Overwrite a whole cell, answer or provided (a student's editor allows both)."""
    def edit(notebook, release):
        cell(notebook, grade_id).source = code
    return edit


AUTOGRAD_TRAIN = '''def train(model, loss_fn, x, y, lr, epochs, batch_size, seed=0):
    """Lets PyTorch do the backward pass."""
    torch.set_grad_enabled(True)
    generator = torch.Generator().manual_seed(seed)
    params = [p for layer in model.layers for p in layer.params.values()]
    for p in params:
        p.requires_grad_(True)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
                    p.grad = None
            total += loss.item() * len(batch)
        losses.append(total / len(x))
    return losses
'''

# name -> (edits, what it shows)
EXAMPLES: dict[str, tuple[list[Edit], str]] = {
    "alice_complete": ([], "a complete, correct solution"),
    "bob_uses_autograd": (
        [rewrite("train", AUTOGRAD_TRAIN)],
        "trains with .backward(): loses the points of everything trained with it",
    ),
    "carol_endless_loop": (
        [add_after("accuracy", "i = 0\nwhile i < 5:\n    print(accuracy(torch.eye(10), torch.arange(10)))\ni += 1")],
        "a cell that never ends: stopped at the cell time limit, the rest still graded",
    ),
    "dave_edits_tests": (
        [
            replace("logistic", "lr=0.05, epochs=40", "lr=0.0005, epochs=1"),
            rewrite("test_logistic", "# my model is fine, no need for this test\nprint('all good')"),
        ],
        "an undertrained model and a test cell emptied to hide it: the test is restored",
    ),
    "erin_partial": (
        [stub("logistic"), stub("mlp"), stub("comparison_answer"), stub("reflection_answer")],
        "only the building blocks and the regression",
    ),
}
MALFORMED = ("frank_malformed", "a notebook file cut off in the middle (invalid JSON)")


def build(course: Course, edits: list[Edit]) -> nbformat.NotebookNode:
    notebook = solved(course)
    release = nbformat.read(course.release_notebook, as_version=4)
    for edit in edits:
        edit(notebook, release)
    return notebook


def write_examples(course: Course) -> list[Path]:
    written = []
    for name in EXAMPLES:
        path = course.submitted_notebook(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(course, EXAMPLES[name][0]), path)
        written.append(path)
    broken = course.submitted_notebook(MALFORMED[0])
    broken.parent.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(solved(course))
    broken.write_text(text[: len(text) // 2])
    return written + [broken]
