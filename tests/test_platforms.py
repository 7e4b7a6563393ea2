"""The Classroom 50 bundle and the Gradescope zip: what they contain (no solutions), how our results.json
maps to each platform's format, and (slow) the whole run of each, as the platform lays it out."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from coursekit.cli import build_parser
from coursekit.config import Course
from coursekit.grading.pipeline import Submission, run_steps
from coursekit.grading.report import results_json
from coursekit.grading.rubric import GradedCell, Rubric, load_rubric
from coursekit.platforms import classroom50, find_notebook, gradescope

ROOT = Path(__file__).resolve().parent.parent
COURSE = Course(ROOT)
# The venv by its real path: the sandbox makes the resolved venv visible, not a symlink leading to it.
VENV_PYTHON = Path(sys.prefix).resolve() / "bin" / "python"
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$")
RUNNER_ENV = {  # what Classroom 50's runner sets, and the Actions variables it passes through
    "CLASSROOM": "ml-2026", "ASSIGNMENT": "classifier-from-scratch", "ASSIGNMENT_TYPE": "individual",
    "OWNER": "alice-s", "USERNAME": "alice-s", "SUBMISSION_TAG": "submit/2026-11-23T10-00-00Z-abc1234",
    "COMMIT_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/commit/abc1234",
    "RELEASE_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/releases/tag/submit%2Fx",
    "REVIEW_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/compare/base...abc1234",
    "GITHUB_REPOSITORY": "ml-org/ml-2026-classifier-from-scratch-alice-s", "GITHUB_REPOSITORY_OWNER": "ml-org",
    "GITHUB_ACTOR": "alice-s", "GITHUB_ACTOR_ID": "4242", "GITHUB_SHA": "abc1234", "GITHUB_SERVER_URL": "https://github.com",
}
IDENTITY = {"classroom": "CLASSROOM", "assignment": "ASSIGNMENT", "assignment_type": "ASSIGNMENT_TYPE",
            "owner": "OWNER", "submission": "SUBMISSION_TAG", "commit": "COMMIT_URL", "release": "RELEASE_URL",
            "review": "REVIEW_URL"}


def our_results(*tests: tuple[str, float, float]) -> dict:
    """A results.json as the grader writes it (report.results_json's fields)."""
    return {"score": sum(score for _, score, _ in tests), "execution_time": 12.5, "output": "Autograded score: ...",
            "tests": [{"name": f"Part 1: {name}", "score": score, "max_score": points, "output": f"PASS  {name}",
                       "status": "passed" if score >= points else "failed", "tags": ["Part 1"], "visibility": "visible"}
                      for name, score, points in tests]}


# ---------------------------------------------------------------- what a bundle contains

def notebooks(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.ipynb"))


def assert_no_solutions(course_folder: Path):
    bundled = Course(course_folder)
    assert bundled.source_notebook.read_bytes() == COURSE.release_notebook.read_bytes()
    assert load_rubric(bundled.source_notebook) == load_rubric(COURSE.source_notebook)
    for path in notebooks(course_folder):
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


def test_classroom50_bundle(tmp_path):
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "autograder.py", "course", "runtime.json"]
    runtime = json.loads((out / "runtime.json").read_text())
    assert runtime == {"runs-on": "ubuntu-latest", "python": "3.11", "apt": ["bubblewrap"]}
    assert_no_solutions(out / "course")
    assert (out / "course" / "coursekit" / "platforms" / "classroom50.py").is_file()
    assert not list(out.rglob("__pycache__"))
    source = (out / "autograder.py").read_text()
    compile(source, "autograder.py", "exec")
    for needed in ('"-r", "requirements.txt", "-c", "constraints.txt"', '"-m", "coursekit", "data"',
                   '"-m", "coursekit.platforms.classroom50"', "apparmor_restrict_unprivileged_userns"):
        assert needed in source, needed


def test_classroom50_refuses_fractional_points(tmp_path, monkeypatch):
    rubric = Rubric((GradedCell("test_linear", 2.5, True, "Part 1"),))
    monkeypatch.setattr(classroom50, "load_rubric", lambda _: rubric)
    with pytest.raises(ValueError, match="test_linear"):
        classroom50.write_bundle(COURSE, tmp_path / "bundle")


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(dest)
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zipped.infolist()}
    for name, mode in modes.items():  # extractall drops the modes
        (dest / name).chmod(mode)
    return dest


def test_gradescope_zip(tmp_path):
    archive = gradescope.write_zip(COURSE, tmp_path / "autograder.zip")
    with zipfile.ZipFile(archive) as zipped:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zipped.infolist()}
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert {name.split("/")[0] for name in modes} == {"setup.sh", "run_autograder", "course"}
    source = unzip(archive, tmp_path / "source")
    assert_no_solutions(source / "course")
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(source / script)]).returncode == 0, script
    setup = (source / "setup.sh").read_text()
    for needed in ("python3.11 -m venv .venv", "-r course/requirements.txt -c course/constraints.txt",
                   "apt-get install -y -qq bubblewrap", "-m coursekit data --offline"):
        assert needed in setup, needed
    assert 'AUTOGRADER_ROOT="${AUTOGRADER_ROOT:-/autograder}"' in (source / "run_autograder").read_text()


def test_find_notebook(tmp_path):
    name = COURSE.notebook_name
    assert find_notebook(tmp_path, name) is None
    (tmp_path / "release" / "x").mkdir(parents=True)
    (tmp_path / "release" / "x" / "mine.ipynb").write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / "release" / "x" / "mine.ipynb"  # the only notebook
    (tmp_path / "release" / "x" / name).write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / "release" / "x" / name
    (tmp_path / name).write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / name


def test_readme_shows_the_three_routes_with_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Where the course runs"):readme.index("## CI")]
    for route in ("**nbgrader", "**Classroom 50**", "**Gradescope**"):
        assert route in section, route
    commands = [shlex.split(c.replace("K/N", "1/2")) for c in re.findall(r"`python -m coursekit ([^`]+)`", section)]
    assert {"autograde", "export", "classroom50", "gradescope"} <= {c[0] for c in commands}
    for argv in commands:
        build_parser().parse_args(argv)


# ---------------------------------------------------------------- mapping to Classroom 50's result.json

def test_classroom50_result_from_ours():
    now = datetime(2026, 11, 23, 10, 5, 9, tzinfo=timezone.utc)
    result = classroom50.result_json(our_results(("test_linear", 8.0, 8.0), ("test_relu", 2.67, 4.0)), RUNNER_ENV, now)
    assert result["schema"] == "classroom50/result/v1"
    assert {key: result[key] for key in IDENTITY} == {key: RUNNER_ENV[var] for key, var in IDENTITY.items()}
    assert result["datetime"] == result["graded_at"] == "2026-11-23T10:05:09Z"
    assert result["submitted_by"] == {"username": "alice-s", "id": 4242}
    assert result["tests"] == [
        {"test-name": "Part 1: test_linear", "passed": True, "score": 8, "max-score": 8, "exact-score": 8.0,
         "output": "PASS  test_linear"},
        {"test-name": "Part 1: test_relu", "passed": False, "score": 2, "max-score": 4, "exact-score": 2.67,
         "output": "PASS  test_relu"}]
    assert (result["score"], result["max-score"]) == (10, 12)


def test_classroom50_identity_from_the_actions_variables_alone():
    env = {k: v for k, v in RUNNER_ENV.items() if k.startswith("GITHUB_") or k in ("CLASSROOM", "ASSIGNMENT", "SUBMISSION_TAG")}
    env["GITHUB_ACTOR_ID"] = ""
    result = classroom50.result_json(our_results(), env, datetime.now(timezone.utc))
    repository = "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s"
    assert result["owner"] == "ml-org" and result["assignment_type"] == "individual"
    assert result["commit"] == result["review"] == f"{repository}/commit/abc1234"
    assert result["release"] == f"{repository}/releases/tag/submit%2F2026-11-23T10-00-00Z-abc1234"
    assert result["submitted_by"] == {"username": "alice-s", "id": None}
    assert (result["score"], result["max-score"], result["tests"]) == (0, 0, [])


def test_classroom50_never_leaves_a_students_own_result(tmp_path, monkeypatch):
    for name in ("result.json", "release-body.md", "feedback.html"):
        (tmp_path / name).write_text("forged by the student")

    def grader_fails(*args, **kwargs):
        raise RuntimeError("no sandbox")

    monkeypatch.setattr(classroom50, "grade_notebook", grader_fails)
    with pytest.raises(RuntimeError):  # the runner reports an error instead of publishing a result
        classroom50.grade_checkout(tmp_path, COURSE, RUNNER_ENV)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("login, name", [("alice-s", "alice-s"), ("../../etc", "_.._etc"), ("", "student")])
def test_classroom50_student_folder_name(login, name):
    assert classroom50.student_name({"OWNER": login}) == name


# ---------------------------------------------------------------- mapping to Gradescope's results.json

def executed_notebook(path: Path) -> Path:
    def test_cell(grade_id, outputs, count=1):
        cell = nbformat.v4.new_code_cell("assert True", execution_count=count, outputs=outputs)
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": grade_id, "points": 4}
        return cell

    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong shape", traceback=[])
    solution = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    solution.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "linear"}
    notebook = nbformat.v4.new_notebook(cells=[
        solution, test_cell("test_linear", []), test_cell("test_relu", [error]), test_cell("test_mlp", [], None),
        nbformat.v4.new_code_cell("print(1)", execution_count=2)])
    nbformat.write(notebook, path)
    return path


def test_gradescope_visible_tests_from_the_executed_notebook(tmp_path):
    tests = gradescope.visible_tests(executed_notebook(tmp_path / "executed.ipynb"))
    assert [(t["name"].split(":")[0], t["status"], t["output"]) for t in tests] == [
        ("test_linear", "passed", ""), ("test_relu", "failed", "AssertionError: wrong shape"),
        ("test_mlp", "failed", "did not run")]
    assert {t["visibility"] for t in tests} == {"visible"} and not any("score" in t for t in tests)
    assert gradescope.visible_tests(tmp_path / "absent.ipynb") == []


def test_gradescope_results_from_ours():
    ours = our_results(("test_linear", 8.0, 8.0), ("test_relu", 2.67, 4.0))
    visible = [{"name": "test_linear: the notebook's visible tests", "status": "passed", "visibility": "visible"}]
    report = gradescope.gradescope_results(ours, visible)
    assert report["score"] == 10.67 and report["execution_time"] == 12.5 and report["stdout_visibility"] == "hidden"
    assert report["tests"][0] == visible[0]
    hidden = report["tests"][1:]
    assert [(t["name"], t["score"], t["max_score"], t["status"], t["visibility"]) for t in hidden] == [
        ("Part 1: test_linear", 8.0, 8.0, "passed", "after_published"),
        ("Part 1: test_relu", 2.67, 4.0, "failed", "after_published")]


# ---------------------------------------------------------------- execution_time

def test_execution_time_is_the_time_spent_before_the_report_is_written(tmp_path):
    written = []

    def sleeps(runner, submission):
        time.sleep(0.3)

    def reports(runner, submission):  # as write_report does: results.json from the record
        written.append(results_json(submission)["execution_time"])

    run_steps(None, Submission("student", tmp_path / "notebook.ipynb"), (sleeps, reports))
    assert written[0] >= 0.3


# ---------------------------------------------------------------- whole runs (the real grader)

def runner_env(**extra: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    return {**keep, **extra}


@pytest.mark.slow
def test_classroom50_autograder_grades_a_checkout(tmp_path):
    bundle = classroom50.write_bundle(COURSE, tmp_path / "autograders" / "classifier-from-scratch")
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "submitted" / "alice_complete" / COURSE.assignment, checkout)
    run = subprocess.run([str(VENV_PYTHON), str(bundle / "autograder.py")], cwd=checkout,
                         env=runner_env(**RUNNER_ENV), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((checkout / "result.json").read_text())
    assert set(result) == {"schema", *IDENTITY, "datetime", "graded_at", "score", "max-score", "tests", "submitted_by"}
    assert result["schema"] == "classroom50/result/v1"
    assert {key: result[key] for key in IDENTITY} == {key: RUNNER_ENV[var] for key, var in IDENTITY.items()}
    assert STAMP.match(result["datetime"]) and STAMP.match(result["graded_at"])
    assert result["submitted_by"] == {"username": "alice-s", "id": 4242}
    rubric = load_rubric(COURSE.source_notebook).autograded
    assert [t["test-name"] for t in result["tests"]] == [f"{c.part}: {c.grade_id}" for c in rubric]
    for test, cell in zip(result["tests"], rubric):
        assert {"test-name", "passed", "score", "max-score"} <= set(test)
        assert type(test["passed"]) is bool and type(test["score"]) is int and type(test["max-score"]) is int
        assert test["max-score"] == cell.points and 0 <= test["score"] <= test["max-score"]
        assert test["passed"] == (test["score"] == test["max-score"])
    assert result["score"] == sum(t["score"] for t in result["tests"]) == result["max-score"] == 80  # the solution
    assert "**80 / 80**" in (checkout / "release-body.md").read_text()
    assert "feedback for alice-s" in (checkout / "feedback.html").read_text()


@pytest.mark.slow
def test_gradescope_autograder_grades_a_submission(tmp_path):
    root = tmp_path / "autograder"  # Gradescope's layout: source/ (the zip), submission/, results/
    unzip(gradescope.write_zip(COURSE, tmp_path / "autograder.zip"), root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    shutil.copytree(ROOT / "submitted" / "erin_partial" / COURSE.assignment, root / "submission")
    run = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True, text=True,
                         env=runner_env(AUTOGRADER_ROOT=str(root), COURSEKIT_PYTHON=str(VENV_PYTHON)))
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((root / "results" / "results.json").read_text())
    rubric = load_rubric(COURSE.source_notebook).autograded
    visible = [t for t in report["tests"] if t["visibility"] == "visible"]
    hidden = [t for t in report["tests"] if t["visibility"] == "after_published"]
    assert len(visible) + len(hidden) == len(report["tests"])
    assert [t["name"] for t in hidden] == [f"{c.part}: {c.grade_id}" for c in rubric]
    assert [t["name"].split(":")[0] for t in visible] == [c.grade_id for c in rubric]
    assert [t["max_score"] for t in hidden] == [c.points for c in rubric]
    assert report["score"] == pytest.approx(sum(t["score"] for t in hidden))
    assert 0 < report["score"] < 80  # a partial submission
    assert {t["status"] for t in visible} == {"passed", "failed"}
    for test in hidden:
        assert test["status"] == ("passed" if test["score"] == test["max_score"] else "failed")
