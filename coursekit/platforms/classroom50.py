"""Classroom 50 (foundation50/classroom50), the successor of GitHub Classroom.

`python -m coursekit classroom50 OUT` writes the instructor's bundle for this assignment: OUT/ goes to
`<classroom>/autograders/<assignment>/` in the classroom's config repository (`autograder.py` and the
`course/` folder beside it), and OUT/runtime.json is the assignment's `runtime` block. On each
submission Classroom 50's runner calls autograder.py in the student's checkout; autograder.py installs
the grader and calls `main` below, which grades the checkout's notebook in bubblewrap and writes
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
from coursekit.platforms import TEMPLATES, feedback_page, find_notebook, grade_notebook, write_course

SCHEMA = "classroom50/result/v1"
# Installed by Classroom 50's grade job before autograder.py runs: Python for the pinned requirements,
# bubblewrap for the sandbox.
RUNTIME = {"runs-on": "ubuntu-latest", "python": "3.11", "apt": ["bubblewrap"]}
FEEDBACK_ASSET = "feedback.html"
COURSE_ROOT = Path(__file__).resolve().parents[2]  # the bundle's course/ (or this repository)


def write_bundle(course: Course, out: Path) -> Path:
    """autograder.py, course/ (grader, pins, release notebook), runtime.json and a README, in `out`."""
    fractional = [c.grade_id for c in load_rubric(course.source_notebook).autograded if c.points != int(c.points)]
    if fractional:
        raise ValueError(f"Classroom 50 scores whole points; these cells have fractional points: {fractional}")
    out.mkdir(parents=True, exist_ok=True)
    write_course(course, out / "course")
    shutil.copy2(TEMPLATES / "classroom50_autograder.py", out / "autograder.py")
    shutil.copy2(TEMPLATES / "classroom50_README.md", out / "README.md")
    (out / "runtime.json").write_text(json.dumps(RUNTIME, indent=2) + "\n")
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
    (checkout / "release-body.md").write_text(
        f"Autograded: **{result['score']} / {result['max-score']}**\n\n```\n{results['output']}\n```\n\n"
        f"The feedback page ({FEEDBACK_ASSET}) shows every check and your notebook as the grader ran it.\n")
    shutil.copy2(feedback_page(course, student), checkout / FEEDBACK_ASSET)
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
