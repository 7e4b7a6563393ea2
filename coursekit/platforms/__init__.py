"""Bundles that run the course's grader on other platforms (Classroom 50, Gradescope).

A bundle carries the pinned requirements, the course policy, the release notebook and the part of the
`coursekit` package that grading needs (GRADER), never source/ (solutions and hidden tests), the example
submissions or `examples.py` (it holds a complete training loop): the rubric comes from the nbgrader
metadata, which the release keeps, so the release notebook also stands in for the source one.
SCORING is the grader's reference side (reference gradients, the trusted retraining): a bundle students
can download (Classroom 50's) leaves it out unless the instructor chooses otherwise (classroom50.py).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import coursekit
from coursekit.config import Course

TEMPLATES = Path(__file__).parent / "templates"
PACKAGE = Path(coursekit.__file__).parent
COURSE_FILES = ("requirements.txt", "constraints.txt", "course.toml")
# What grading needs of the package, relative to it: a folder brings everything in it.
GRADER = ("__init__.py", "__main__.py", "cli.py", "config.py", "data.py", "grading", "in_sandbox",
          "course/__init__.py", "course/gradebook.py", "course/gradebook_lock.py", "course/inert.py",
          "course/late.py", "platforms/__init__.py", "platforms/install_env.py")
SCORING = ("grading/checks.py", "grading/retrain.py")  # those that exist
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_package(names: tuple[str, ...], dest: Path) -> None:
    """These files and folders of the package, at the same places under dest/coursekit/."""
    for name in names:
        source, target = PACKAGE / name, dest / PACKAGE.name / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=SKIPPED, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def write_course(course: Course, dest: Path, route: str, scoring: bool = True) -> Course:
    """A course folder the grader can run from, with no solution in it: GRADER and the route's own module
    (`platforms/<route>.py`), with SCORING or without it."""
    dest.mkdir(parents=True, exist_ok=True)
    copy_package((*GRADER, f"platforms/{route}.py"), dest)
    if not scoring:
        for name in SCORING:
            (dest / PACKAGE.name / name).unlink(missing_ok=True)
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
        shutil.copy2(notebook, course.submitted_notebook(student), follow_symlinks=False)
    grade_class(course, [student], jobs=1, require_sandbox=require_sandbox, progress=False)
    return json.loads(course.results_file(student).read_text())


def fence(text: str) -> str:
    """A markdown code block that no text can close: its fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}\n{text}\n{marks}"
