"""Classroom 50 (foundation50/classroom50), the successor of GitHub Classroom.

`python -m coursekit classroom50 OUT` writes the instructor's bundle for this assignment: `autograder.py`
and `course/` go to `<classroom>/autograders/<assignment>/` in the classroom's config repository, whose
Pages site serves them to every grading job, and to anyone: students can download them. So by default
`course/` holds no SCORING module (the grader's reference side); they are in OUT/private/, which the
instructor installs on a self-hosted runner that only Classroom 50's grading workflow may use (runtime.json
selects it), never in the repository. There is no private place on GitHub's own runners: the grading job
runs in the student's repository and gets no secrets. `--public-checks` puts SCORING in `course/` instead,
for GitHub's runners, with what that exposes said in README.md.

On each submission Classroom 50's runner calls autograder.py in the student's checkout; autograder.py
installs the grader and calls `main` below, which grades the checkout's notebook in bubblewrap and writes
`result.json` (schema classroom50/result/v1), `release-body.md` and the feedback page, `feedback.html`,
which the assignment's `release_assets` attaches to the submission's Release.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

from coursekit.config import Course
from coursekit.grading.rubric import load_rubric
from coursekit.platforms import (
    PACKAGE,
    SCORING,
    TEMPLATES,
    copy_package,
    fence,
    find_notebook,
    grade_notebook,
    write_course,
)

SCHEMA = "classroom50/result/v1"
# The assignment's `runtime` block. On GitHub's runners, Classroom 50's grade job installs Python for the
# pinned requirements and bubblewrap for the sandbox; a self-hosted runner brings its own (README.md).
HOSTED_RUNTIME = {"runs-on": "ubuntu-latest", "python": "3.11", "apt": ["bubblewrap"]}
SELF_HOSTED_RUNTIME = {"runs-on": ["self-hosted", "coursekit"]}
MANIFEST = "bundle.json"  # in course/: which SCORING modules autograder.py must find on the runner
FEEDBACK_ASSET = "feedback.html"
COURSE_ROOT = Path(__file__).resolve().parents[2]  # the bundle's course/ (or this repository)


def write_bundle(course: Course, out: Path, public_checks: bool = False) -> Path:
    """autograder.py, course/ (grader, pins, release notebook), runtime.json and a README in `out`, and
    out/private/ (SCORING, ignored by git) unless `public_checks`."""
    fractional = [c.grade_id for c in load_rubric(course.source_notebook).autograded if c.points != int(c.points)]
    if fractional:
        raise ValueError(f"Classroom 50 scores whole points; these cells have fractional points: {fractional}")
    out.mkdir(parents=True, exist_ok=True)
    write_course(course, out / "course", "classroom50", scoring=public_checks)
    scoring = [name for name in SCORING if (PACKAGE / name).is_file()]
    (out / "course" / MANIFEST).write_text(json.dumps({"private": [] if public_checks else scoring}, indent=2) + "\n")
    if not public_checks:
        copy_package(tuple(scoring), out / "private")
        (out / "private" / ".gitignore").write_text("# installed on the self-hosted runner, never committed\n*\n")
    shutil.copy2(TEMPLATES / "classroom50_autograder.py", out / "autograder.py")
    shutil.copy2(TEMPLATES / "classroom50_README.md", out / "README.md")
    runtime = HOSTED_RUNTIME if public_checks else SELF_HOSTED_RUNTIME
    (out / "runtime.json").write_text(json.dumps(runtime, indent=2) + "\n")
    return out


def check_entry(test: dict) -> dict:
    """One graded check of our results.json as a Classroom 50 test. Its scores are integers: a partial
    score is rounded down (never above what the grader gave), the exact one kept in `exact-score`."""
    return {"test-name": test["name"], "passed": test["status"] == "passed",
            "score": math.floor(test["score"] + 1e-9), "max-score": int(test["max_score"]),
            "exact-score": test["score"], "output": test.get("output", "")}


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def identity(env: Mapping[str, str], now: datetime) -> dict:
    """Who and what was graded, from the runner's environment. The runner stamps owner, assignment_type
    and datetime itself; the GITHUB_* fallbacks are the same facts as Actions names them."""
    repository = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}"
    commit = env.get("COMMIT_URL") or f"{repository}/commit/{env['GITHUB_SHA']}"
    actor_id = env.get("GITHUB_ACTOR_ID", "")
    return {
        "classroom": env["CLASSROOM"],
        "assignment": env["ASSIGNMENT"],
        "assignment_type": env.get("ASSIGNMENT_TYPE") or "individual",
        "owner": env.get("OWNER") or env.get("USERNAME") or env["GITHUB_REPOSITORY_OWNER"],
        "submission": env["SUBMISSION_TAG"],
        "commit": commit,
        "release": env.get("RELEASE_URL") or f"{repository}/releases/tag/{quote(env['SUBMISSION_TAG'], safe='')}",
        "review": env.get("REVIEW_URL") or commit,
        "datetime": utc_stamp(now),
        "graded_at": utc_stamp(now),
        "submitted_by": {"username": env["GITHUB_ACTOR"], "id": int(actor_id) if actor_id.isdigit() else None},
    }


def result_json(results: dict, env: Mapping[str, str], now: datetime) -> dict:
    """Classroom 50's result.json from our results.json: one test per autograded check, points as ours
    (the parts graded by hand are not in it; the course staff adds them)."""
    tests = [check_entry(test) for test in results["tests"]]
    return {"schema": SCHEMA, **identity(env, now), "score": sum(t["score"] for t in tests),
            "max-score": sum(t["max-score"] for t in tests), "tests": tests}


def release_body(result: dict, results: dict) -> str:
    """The Release's text: the score, then our output (student text, such as an exception's message,
    inside a fence it cannot close)."""
    return (f"Autograded: **{result['score']} / {result['max-score']}**\n\n{fence(results['output'])}\n\n"
            f"The feedback page ({FEEDBACK_ASSET}) shows every check and your notebook as the grader ran it.\n")


def student_name(env: Mapping[str, str]) -> str:
    login = env.get("OWNER") or env.get("USERNAME") or env.get("GITHUB_REPOSITORY_OWNER") or "student"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", login).lstrip(".") or "student"


def grade_checkout(checkout: Path, course: Course, env: Mapping[str, str]) -> dict:
    """Grade the checkout's notebook; write result.json, release-body.md and feedback.html into it."""
    for name in ("result.json", "release-body.md", FEEDBACK_ASSET):  # never publish a student's own copy
        (checkout / name).unlink(missing_ok=True)
    student = student_name(env)
    results = grade_notebook(course, find_notebook(checkout, course.notebook_name), student, require_sandbox=True)
    result = result_json(results, env, datetime.now(timezone.utc))
    (checkout / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (checkout / "release-body.md").write_text(release_body(result, results))
    shutil.copy2(course.feedback_page(student), checkout / FEEDBACK_ASSET)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="grade a student's checkout for Classroom 50")
    parser.add_argument("checkout", type=Path, help="the student's checkout (the runner's working directory)")
    args = parser.parse_args(argv)
    result = grade_checkout(args.checkout.resolve(), Course(COURSE_ROOT), os.environ)
    print(f"Autograded: {result['score']} / {result['max-score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
