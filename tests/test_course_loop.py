"""One assignment through the whole course loop, as the README's "Running a course" walks it:
collect from student repositories -> autograde (into nbgrader's gradebook) -> grade by hand through
formgrader's own web API on loopback -> coursekit feedback -> nbgrader export and the LMS file."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from coursekit.cli import main
from coursekit.config import Course
from coursekit.course.gradebook import open_gradebook
from coursekit.grading.batch import grade_class

pytestmark = pytest.mark.slow
NOTEBOOK = "classifier_from_scratch"
TOKEN = "course-loop-test"
MANUAL = {"alice": {"derivation_answer": 5, "regression_answer": 5, "comparison_answer": 5, "reflection_answer": 3},
          "erin": {"regression_answer": 5, "comparison_answer": 6}}
COMMENT = "Say why a scalar target makes 4 look halfway between 3 and 5."


def commit(repo: Path, notebook: Path, when: str) -> None:
    repo.mkdir(parents=True)
    shutil.copy(notebook, repo / f"{NOTEBOOK}.ipynb")
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_NAME": "student",
           "GIT_AUTHOR_EMAIL": "student@example.org", "GIT_COMMITTER_NAME": "student",
           "GIT_COMMITTER_EMAIL": "student@example.org"}
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "submit"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    (root / "course.toml").write_text(
        (ROOT / "course.toml").read_text() + '\n[lms]\ncanvas_match_columns = ["SIS Login ID"]\n'
    )
    repos = tmp_path_factory.mktemp("repos")
    submitted = ROOT / "submitted"
    commit(repos / "classifier-from-scratch-alice", submitted / "alice_complete" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
           "2026-12-04T20:00:00+00:00")
    commit(repos / "classifier-from-scratch-erin", submitted / "erin_partial" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
           "2026-12-06T10:00:00+00:00")  # 2 days started after the due date: 20% off
    commit(repos / "classifier-from-scratch-frank", submitted / "frank_malformed" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
           "2026-12-04T21:00:00+00:00")  # cut off in the middle: not a notebook
    assert main(["--root", str(root), "collect", str(repos)]) == 0
    results = grade_class(Course(root), jobs=2, require_sandbox=True, progress=False)
    assert {r.student: r.score for r in results} == {"alice": 80, "erin": 56, "frank": 0}
    return Course(root)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def formgrader(course, tmp_path_factory):
    """Jupyter server with nbgrader's formgrader extension, on loopback only, for a bounded time."""
    port, scripts = free_port(), Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}",
           "JUPYTER_RUNTIME_DIR": str(tmp_path_factory.mktemp("runtime")),
           "PYTHONPATH": str(ROOT)}  # the kit, importable as it is in its own course folder
    server = subprocess.Popen(
        [
            str(scripts / "jupyter"),
            "server",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={course.root}",
        ],
        cwd=course.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                request(base, "/api/status")
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("formgrader's server did not start within 120 s")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def request(base: str, path: str, body: dict | None = None, method: str | None = None):
    data = json.dumps(body).encode() if body is not None else b"" if method == "POST" else None
    req = urllib.request.Request(base + path, data=data, method=method or ("PUT" if body is not None else "GET"),
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        text = response.read().decode()
        return json.loads(text) if path.startswith(("/formgrader/api", "/api")) else text


def submission_id(course: Course, student: str) -> str:
    with open_gradebook(course) as gradebook:
        return gradebook.find_submission_notebook(NOTEBOOK, NOTEBOOK, student).id


def test_formgrader_shows_the_autograded_submission(course, formgrader):
    page = request(formgrader, f"/formgrader/submissions/{submission_id(course, 'erin')}/")
    assert "erin" in page and "test_logistic" in page and "regression_answer" in page
    grades = {
        g["name"]: g
        for g in request(formgrader, f"/formgrader/api/grades?submission_id={submission_id(course, 'erin')}")
    }
    assert grades["test_linear"]["auto_score"] == 8 and grades["test_logistic"]["auto_score"] == 0
    assert grades["regression_answer"]["needs_manual_grade"]


def test_formgrader_lists_the_unreadable_submission_for_grading_by_hand(course, formgrader):
    page = request(formgrader, f"/formgrader/submissions/{submission_id(course, 'frank')}/")
    assert "frank" in page and "could not grade this submission" in page and "reflection_answer" in page


def test_formgraders_buttons_keep_the_sandboxed_results(course, formgrader):
    results = course.root / "autograded" / "erin" / NOTEBOOK / "results.json"
    before = results.read_text()
    outcome = request(formgrader, f"/formgrader/api/submission/{NOTEBOOK}/erin/autograde", method="POST")
    assert not outcome["success"] and "python -m coursekit autograde erin" in outcome["log"]
    assert results.read_text() == before
    outcome = request(formgrader, f"/formgrader/api/assignment/{NOTEBOOK}/erin/generate_feedback", method="POST")
    assert outcome["success"], outcome
    page = (course.root / "feedback" / "erin" / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "Content-Security-Policy" in page and "mathjax" not in page.lower()


def grade_by_hand(course, formgrader) -> None:
    """MANUAL's points and a comment, through formgrader's API as a grader's clicks send them."""
    for student, scores in MANUAL.items():
        sid = submission_id(course, student)
        grades = {g["name"]: g["id"] for g in request(formgrader, f"/formgrader/api/grades?submission_id={sid}")}
        for grade_id, points in scores.items():
            request(formgrader, f"/formgrader/api/grade/{grades[grade_id]}", {"manual_score": points})
        comments = {c["name"]: c["id"] for c in request(formgrader, f"/formgrader/api/comments?submission_id={sid}")}
        request(formgrader, f"/formgrader/api/comment/{comments['regression_answer']}", {"manual_comment": COMMENT})


def nbgrader_export(course, out: Path) -> dict[str, dict]:
    """nbgrader's own `export` of the gradebook, by student."""
    scripts = Path(sys.executable).parent
    subprocess.run(
        [str(scripts / "nbgrader"), "export", f"--to={out}", "--log-level=WARN"],
        cwd=course.root,
        check=True,
        env={**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"},
    )
    with open(out) as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def test_graded_by_hand_then_feedback_and_exports(course, formgrader, tmp_path):
    grade_by_hand(course, formgrader)
    assert main(["--root", str(course.root), "feedback"]) == 0
    alice = (course.root / "feedback" / "alice" / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "5 / 6" in alice and COMMENT in alice and "98 / 100" in alice
    erin = (course.root / "feedback" / "erin" / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "-13.4" in erin and "not graded yet / 4" in erin

    exported = nbgrader_export(course, tmp_path / "nbgrader.csv")
    assert [
        (exported[s]["raw_score"], exported[s]["late_submission_penalty"], exported[s]["score"])
        for s in ("alice", "erin")
    ] == [("98.0", "0.0", "98.0"), ("67.0", "13.4", "53.6")]
    with open(course.root / "grades.csv", newline="") as handle:
        grades = {row["student"]: row for row in csv.DictReader(handle)}
    assert [(grades[s]["total"], grades[s]["late_penalty"], grades[s]["status"]) for s in ("alice", "erin", "frank")] \
        == [("98", "0", "final"), ("53.6", "13.4", "manual_pending"), ("0", "0", "manual_pending")]

    roster = tmp_path / "roster.csv"
    roster.write_text('Student,ID,SIS User ID,SIS Login ID,Section,Classifier from scratch (1234)\n'
                      '"Liddell, Alice",11,S1,alice,A,\n"Erin, E.",12,S2,erin,B,\n')
    assert main(["--root", str(course.root), "export", "--lms", "canvas", "--roster", str(roster),
                 "--out", str(tmp_path / "canvas.csv")]) == 0
    with open(tmp_path / "canvas.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                                             "Classifier from scratch (1234)"],
                                            ["Liddell, Alice", "11", "S1", "alice", "A", "98"],
                                            ["Erin, E.", "12", "S2", "erin", "B", ""]]
    with open_gradebook(course) as gradebook:  # the roster's names, for formgrader
        assert (gradebook.find_student("alice").first_name, gradebook.find_student("alice").last_name) == (
            "Alice",
            "Liddell",
        )
