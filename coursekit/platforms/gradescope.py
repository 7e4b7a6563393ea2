"""Gradescope: `python -m coursekit gradescope OUT.zip` builds the programming assignment's autograder.

The zip holds Gradescope's `setup.sh` (run once when the image is built: Python 3.11, the pinned
requirements and MNIST in /opt/coursekit, bubblewrap where the image allows it) and `run_autograder` (run
per submission: grades `<root>/submission` and writes `<root>/results/results.json`), `course/`, the
grader with the release notebook, and README.md (the settings to raise: memory, CPU, timeout). `<root>`
is /autograder, or $AUTOGRADER_ROOT (tests use a temp folder). Where bubblewrap cannot start, the grader
falls back to an unprivileged user (grading/unprivileged.py), and the student's output says so.

The grader's checks carry the points; they show when `[gradescope] visibility` in course.toml says
(default: once grades are published), and until then the top-level output shows no score. The
notebook's visible tests, which students ran themselves, show at once. Whatever happens, results.json
is written: a zero with the reason when grading cannot start.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from coursekit.config import Course
from coursekit.grading.bubblewrap import SandboxUnavailable
from coursekit.grading.rubric import is_test_cell, nbgrader_meta
from coursekit.platforms import TEMPLATES, fence, find_notebook, grade_notebook, write_course

SCRIPTS = ("setup.sh", "run_autograder")
COURSE_ROOT = Path(__file__).resolve().parents[2]  # the bundle's course/ (or this repository)
STUDENT = "submission"
# grade_id -> the leaderboard's column for the value its check measured, and its order
LEADERBOARD = {"test_mlp": ("Two-layer network: test accuracy", "desc"),
               "test_logistic": ("Logistic regression: test accuracy", "desc"),
               "test_regression": ("Regression: test MSE", "asc")}
SCORE_LATER = {"after_due_date": "Your autograded score will show after the due date.",
               "after_published": "Your autograded score will show when the course staff publishes the grades.",
               "hidden": "Your autograded score is not shown here; the course staff will tell you."}
ISOLATION_NOTES = {
    "unprivileged user": "Sandbox: this container cannot run bubblewrap, so your notebook ran as an unprivileged "
                         "user of its own, which cannot read the autograder's files or change its results{network}.",
    "none": "Sandbox: none could be set up in this container; your notebook ran with the autograder's own rights.",
}

NO_SANDBOX = ("no sandbox can run in this container: bubblewrap cannot create its namespaces here, and the "
              "fallback (an unprivileged user) needs the autograder to run as root with its Python and MNIST "
              "readable by other users (setup.sh installs them in /opt/coursekit).")


@dataclass(frozen=True)
class Options:
    """`[gradescope]` in course.toml (config.py's SCHEMA has the defaults)."""

    visibility: str          # of the graded checks: visible | after_due_date | after_published | hidden
    output_format: str       # text | md, for the top-level output and the tests' outputs
    leaderboard: bool        # the models' test accuracy and MSE, as the grader measured them
    stdout_visibility: str   # run_autograder's own output, for the course staff by default

    @classmethod
    def of(cls, course: Course) -> Options:
        return cls(**course.settings.sections["gradescope"])


def write_zip(course: Course, out: Path) -> Path:
    """setup.sh and run_autograder at the top of the zip (executable), course/ beside them."""
    with tempfile.TemporaryDirectory() as staging:
        bundled = write_course(course, Path(staging) / "course", "gradescope")
        files = [(TEMPLATES / f"gradescope_{name}", name) for name in (*SCRIPTS, "README.md")]
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


def shown(text: str, options: Options) -> str:
    """Text the student's code may have shaped (exception messages), safe in the chosen format."""
    return fence(text) if options.output_format == "md" and text else text


def hidden_checks(results: dict, options: Options) -> list[dict]:
    """Our results.json's checks: the points, shown as `[gradescope] visibility` says."""
    return [{"name": test["name"], "score": test["score"], "max_score": test["max_score"], "status": test["status"],
             "output": shown(test.get("output", ""), options), "output_format": options.output_format,
             "tags": test.get("tags", []), "visibility": options.visibility}
            for test in results["tests"]]


def visible_tests(executed: Path, options: Options) -> list[dict]:
    """The notebook's visible test cells as the grader ran them (its executed notebook): passed when the
    cell ran without an error. Status only: the points are the hidden checks'."""
    if not executed.is_file():
        return []
    tests = []
    for cell in nbformat.read(executed, as_version=4).cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and is_test_cell(cell):
            ran = cell.get("execution_count") is not None
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            status = "passed" if ran and not errors else "failed"
            detail = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else "" if ran else "did not run"
            tests.append({"name": f"{meta['grade_id']}: the notebook's visible tests", "status": status,
                          "output": shown(detail, options), "output_format": options.output_format,
                          "visibility": "visible"})
    return tests


def leaderboard(results: dict) -> list[dict]:
    """The value each model's check measured (recomputed by the grader, never the student's own)."""
    entries = []
    for test in results["tests"]:
        extra = test.get("extra_data") or {}
        measured = [check["measured"] for check in extra.get("checks", []) if check.get("measured") is not None]
        if extra.get("grade_id") in LEADERBOARD and measured:
            name, order = LEADERBOARD[extra["grade_id"]]
            entries.append({"name": name, "value": round(measured[0], 4), "order": order})
    return entries


def summary(results: dict, options: Options, isolation: str, network_off: bool) -> str:
    """The top-level output, which students see at once: the score only when the checks are visible."""
    total = sum(test["max_score"] for test in results["tests"])
    score_line = f"Autograded score: {results['score']:g} / {total:g}" if options.visibility == "visible" \
        else SCORE_LATER[options.visibility]
    note = ISOLATION_NOTES.get(isolation, "").format(network=", and had no network" if network_off else "")
    # a late penalty is a share of the score: it would tell the score before its time
    told = [m["text"] for m in results.get("extra_data", {}).get("messages", [])
            if options.visibility == "visible" or m.get("kind") != "late"]
    head = [f"**{score_line}**" if options.output_format == "md" else score_line] + ([note] if note else [])
    return "\n\n".join(head + ([shown("\n".join(told), options)] if told else []))


def gradescope_results(results: dict, visible: list[dict], options: Options, isolation: str = "bubblewrap",
                       network_off: bool = True) -> dict:
    report = {"score": results["score"], "execution_time": results.get("execution_time"),
              "output": summary(results, options, isolation, network_off), "output_format": options.output_format,
              "stdout_visibility": options.stdout_visibility, "tests": visible + hidden_checks(results, options),
              "extra_data": {"isolation": isolation, **results.get("extra_data", {})}}
    if options.leaderboard:
        report["leaderboard"] = leaderboard(results)
    return report


def failure_results(reason: str, seconds: float) -> dict:
    """A valid results.json when grading could not start or broke: zero, and why, for the student."""
    text = (f"The autograder could not grade this submission: {reason}\n"
            "This is not a verdict on your work: the course staff can see what happened and will regrade it.")
    return {"score": 0, "execution_time": round(seconds, 1), "output": text, "stdout_visibility": "hidden",
            "tests": [{"name": "Autograder", "score": 0, "status": "failed", "output": text, "visibility": "visible"}]}


def grade(root: Path, course: Course) -> dict:
    from coursekit.data import provision
    from coursekit.grading.bubblewrap import Sandbox, python_read_only_paths

    options = Options.of(course)
    # the same choice the grader's own Sandbox makes, to tell the student which isolation their code had
    sandbox = Sandbox([*python_read_only_paths(), provision(online=False, progress=False)],
                      require=os.environ.get("COURSEKIT_REQUIRE_SANDBOX", "1") != "0")
    results = grade_notebook(course, find_notebook(root / "submission", course.notebook_name), STUDENT,
                             require_sandbox=sandbox.isolation != "none")
    visible = visible_tests(course.executed_notebook(STUDENT), options)
    return gradescope_results(results, visible, options, sandbox.isolation, sandbox.network_off)


def write_results(path: Path, report: dict) -> None:
    """Atomically, so that Gradescope never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(path)


def main() -> int:
    start = time.monotonic()
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    root.chmod(0o700)  # the autograder's files: out of reach of the fallback's unprivileged uid
    try:
        report = grade(root, Course(COURSE_ROOT))
    except SandboxUnavailable:
        report = failure_results(NO_SANDBOX, time.monotonic() - start)
    except Exception as error:  # still a valid results.json, with the reason
        traceback.print_exc()
        report = failure_results(f"the grader stopped ({type(error).__name__}: {error}).", time.monotonic() - start)
    write_results(root / "results" / "results.json", report)
    print(f"Autograded: {report['score']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
