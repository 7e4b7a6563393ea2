"""Gradescope: `python -m coursekit gradescope OUT.zip` builds the programming assignment's autograder.

The zip holds Gradescope's `setup.sh` (run once when the image is built: Python 3.11, the pinned
requirements, bubblewrap where the image allows it, MNIST offline) and `run_autograder` (run per
submission: grades `<root>/submission` and writes `<root>/results/results.json`), and `course/`, the
grader with the release notebook. `<root>` is /autograder, or $AUTOGRADER_ROOT (tests use a temp folder).

The grader's checks are the hidden tests: they carry the points and show once grades are published
("after_published"). The notebook's visible tests, which students ran themselves, show at once ("visible").
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

from coursekit.config import Course
from coursekit.platforms import TEMPLATES, find_notebook, grade_notebook, graded_file, write_course

SCRIPTS = ("setup.sh", "run_autograder")
COURSE_ROOT = Path(__file__).resolve().parents[2]  # the bundle's course/ (or this repository)
STUDENT = "submission"


def write_zip(course: Course, out: Path) -> Path:
    """setup.sh and run_autograder at the top of the zip (executable), course/ beside them."""
    with tempfile.TemporaryDirectory() as staging:
        bundled = write_course(course, Path(staging) / "course")
        files = [(TEMPLATES / f"gradescope_{name}", name) for name in SCRIPTS]
        files += [(path, f"course/{path.relative_to(bundled.root)}") for path in sorted(bundled.root.rglob("*"))
                  if path.is_file()]
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, name in files:
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.create_system = 3  # Unix, so that unzip keeps the modes
                info.external_attr = (0o100755 if name in SCRIPTS else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return out


def hidden_checks(results: dict) -> list[dict]:
    """Our results.json's checks: the points, shown when the grades are published."""
    return [{"name": test["name"], "score": test["score"], "max_score": test["max_score"], "status": test["status"],
             "output": test.get("output", ""), "tags": test.get("tags", []), "visibility": "after_published"}
            for test in results["tests"]]


def visible_tests(executed: Path) -> list[dict]:
    """The notebook's visible test cells as the grader ran them (its executed notebook): passed when the
    cell ran without an error. Status only: the points are the hidden checks'."""
    if not executed.is_file():
        return []
    tests = []
    for cell in nbformat.read(executed, as_version=4).cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            ran = cell.get("execution_count") is not None
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            status = "passed" if ran and not errors else "failed"
            detail = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else "" if ran else "did not run"
            tests.append({"name": f"{meta['grade_id']}: the notebook's visible tests", "status": status,
                          "output": detail, "visibility": "visible"})
    return tests


def gradescope_results(results: dict, visible: list[dict]) -> dict:
    return {"score": results["score"], "execution_time": results.get("execution_time"),
            "output": results.get("output", ""), "stdout_visibility": "hidden",
            "tests": visible + hidden_checks(results)}


def main() -> int:
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    course = Course(COURSE_ROOT)
    require = os.environ.get("COURSEKIT_REQUIRE_SANDBOX", "1") != "0"
    results = grade_notebook(course, find_notebook(root / "submission", course.notebook_name), STUDENT, require)
    report = gradescope_results(results, visible_tests(graded_file(course, STUDENT, course.notebook_name)))
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / "results.json").write_text(json.dumps(report, indent=1))
    print(f"Autograded: {results['score']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
