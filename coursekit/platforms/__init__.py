"""Bundles that run the course's grader on other platforms (Classroom 50, Gradescope).

A bundle carries a copy of the grader, the pinned requirements, the course policy and the release
notebook, never source/ (solutions and hidden tests): the rubric comes from the nbgrader metadata,
which the release keeps, so the release notebook also stands in for the source one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import coursekit
from coursekit.config import Course

TEMPLATES = Path(__file__).parent / "templates"
PACKAGE = Path(coursekit.__file__).parent
COURSE_FILES = ("requirements.txt", "constraints.txt", "course.toml")


def write_course(course: Course, dest: Path) -> Course:
    """A course folder the grader can run from, with no solution in it."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PACKAGE, dest / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    dirs_exist_ok=True)
    for name in COURSE_FILES:
        shutil.copy2(course.root / name, dest / name)
    bundled = Course(dest, course.assignment)
    for target in (bundled.release_notebook, bundled.source_notebook):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(course.release_notebook, target)
    return bundled


def find_notebook(folder: Path, name: str) -> Path | None:
    """The submitted notebook: `name` at the top, else the only `name` or the only notebook below."""
    if (folder / name).is_file():
        return folder / name
    for pattern in (name, "*.ipynb"):
        found = [p for p in folder.rglob(pattern) if ".ipynb_checkpoints" not in p.parts and ".git" not in p.parts]
        if len(found) == 1:
            return found[0]
    return None


def grade_notebook(course: Course, notebook: Path | None, student: str, require_sandbox: bool) -> dict:
    """Grade one notebook (None: an empty submission, which scores 0 with a message) with the course's
    grader, which writes autograded/ and feedback/ under the course folder; returns its results.json."""
    from coursekit.grading.batch import grade_class

    folder = course.submission(student)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if notebook is not None:  # a symlink stays one: the grader reports it instead of reading its target
        shutil.copy2(notebook, folder / course.notebook_name, follow_symlinks=False)
    grade_class(course, [student], jobs=1, require_sandbox=require_sandbox, progress=False)
    return json.loads(graded_file(course, student, "results.json").read_text())


def graded_file(course: Course, student: str, name: str) -> Path:
    return course.root / "autograded" / student / course.assignment / name


def feedback_page(course: Course, student: str) -> Path:
    return course.root / "feedback" / student / course.assignment / course.notebook_name.replace(".ipynb", ".html")
