"""How our results.json maps to Classroom 50's result.json and Gradescope's results.json, and the zero with
the reason each writes when grading cannot start or breaks."""
from __future__ import annotations

import os
import stat
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from coursekit.config import Course
from coursekit.grading.pipeline import run_steps
from coursekit.grading.record import Submission
from coursekit.grading.report import results_json
from coursekit.platforms import classroom50, gradescope
from support import IDENTITY, RUNNER_ENV, fake_command, read_results, unzip

COURSE = Course(ROOT)


def our_results(*tests: tuple[str, float, float]) -> dict:
    """A results.json as the grader writes it (report.results_json's fields)."""
    return {"score": sum(score for _, score, _ in tests), "execution_time": 12.5, "output": "Autograded score: ...",
            "tests": [{"name": f"Part 1: {name}", "score": score, "max_score": points, "output": f"PASS  {name}",
                       "status": "passed" if score >= points else "failed", "tags": ["Part 1"], "visibility": "visible"}
                      for name, score, points in tests]}


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
    env = {
        k: v
        for k, v in RUNNER_ENV.items()
        if k.startswith("GITHUB_") or k in ("CLASSROOM", "ASSIGNMENT", "SUBMISSION_TAG")
    }
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


def test_classroom50_release_body_keeps_a_students_message_inside_its_fence():
    import markdown_it

    message = "Note: cell 3: error: ValueError: oops\n```\n# Full marks\n[claim](https://example.org)\n````"
    body = classroom50.release_body({"score": 40, "max-score": 80}, {"output": f"Autograded score: 40 / 80\n{message}"})
    tokens = markdown_it.MarkdownIt().parse(body)
    assert [t.type for t in tokens if t.type in ("fence", "heading_open", "link_open")] == ["fence"]
    assert message in next(t.content for t in tokens if t.type == "fence")


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


TEXT = gradescope.Options("after_published", "text", False, "hidden")


def test_gradescope_visible_tests_from_the_executed_notebook(tmp_path):
    tests = gradescope.visible_tests(executed_notebook(tmp_path / "executed.ipynb"), TEXT)
    assert [(t["name"].split(":")[0], t["status"], t["output"]) for t in tests] == [
        ("test_linear", "passed", ""), ("test_relu", "failed", "AssertionError: wrong shape"),
        ("test_mlp", "failed", "did not run")]
    assert {t["visibility"] for t in tests} == {"visible"} and not any("score" in t for t in tests)
    assert gradescope.visible_tests(tmp_path / "absent.ipynb", TEXT) == []


def with_messages(results: dict, *messages: tuple[str, str]) -> dict:
    return {**results, "extra_data": {"messages": [{"kind": kind, "text": text} for kind, text in messages]}}


def test_gradescope_results_from_ours():
    ours = our_results(("test_linear", 8.0, 8.0), ("test_relu", 2.67, 4.0))
    visible = [{"name": "test_linear: the notebook's visible tests", "status": "passed", "visibility": "visible"}]
    report = gradescope.gradescope_results(ours, visible, TEXT)
    assert report["score"] == 10.67 and report["execution_time"] == 12.5 and report["stdout_visibility"] == "hidden"
    assert report["tests"][0] == visible[0] and "leaderboard" not in report
    hidden = report["tests"][1:]
    assert [(t["name"], t["score"], t["max_score"], t["status"], t["visibility"]) for t in hidden] == [
        ("Part 1: test_linear", 8.0, 8.0, "passed", "after_published"),
        ("Part 1: test_relu", 2.67, 4.0, "failed", "after_published")]


@pytest.mark.parametrize("visibility", ["after_due_date", "after_published", "hidden"])
def test_gradescope_output_shows_no_score_before_the_checks_show(visibility):
    ours = with_messages(our_results(("test_linear", 7.0, 8.0)), ("pending", "Pending manual grading: x (6)"),
                         ("late", "Late by 1 day(s) (percent_per_day): -0.7 points"))
    report = gradescope.gradescope_results(ours, [], gradescope.Options(visibility, "text", False, "hidden"))
    assert "7" not in report["output"] and "Pending manual grading: x (6)" in report["output"]
    assert {t["visibility"] for t in report["tests"]} == {visibility}
    shown = gradescope.gradescope_results(ours, [], gradescope.Options("visible", "text", False, "visible"))
    assert shown["output"].startswith("Autograded score: 7 / 8") and "-0.7 points" in shown["output"]
    assert shown["stdout_visibility"] == "visible"


def test_gradescope_output_says_how_the_notebook_was_isolated():
    ours = our_results(("test_linear", 8.0, 8.0))
    fallback = gradescope.gradescope_results(ours, [], TEXT, isolation="unprivileged user", network_off=True)
    assert "ran as an unprivileged user" in fallback["output"] and "had no network" in fallback["output"]
    assert fallback["extra_data"]["isolation"] == "unprivileged user"
    assert "Sandbox" not in gradescope.gradescope_results(ours, [], TEXT, isolation="bubblewrap")["output"]


def test_gradescope_markdown_output_cannot_be_shaped_by_a_students_message():
    ours = with_messages(our_results(("test_relu", 0.0, 4.0)),
                         ("note", "Note: cell 3: error: ValueError: ```\n# I am a heading\n[click](http://x)"))
    ours["tests"][0]["output"] = "FAIL  could not be read (TypeError: ```` **bold**)"
    report = gradescope.gradescope_results(ours, [], gradescope.Options("after_published", "md", False, "hidden"))
    assert report["output_format"] == "md" and report["tests"][0]["output_format"] == "md"
    note = report["output"].split("\n\n", 1)[1]
    assert note.startswith("````\n") and note.endswith("\n````") and note.count("````") == 2
    assert report["tests"][0]["output"].startswith("`````\n") and report["tests"][0]["output"].endswith("\n`````")


def test_gradescope_leaderboard_from_what_the_grader_measured():
    def model(grade_id, value):
        return {
            "name": grade_id,
            "score": 0,
            "max_score": 10,
            "status": "failed",
            "extra_data": {
                "grade_id": grade_id,
                "checks": [
                    {"passed": True, "sentence": "shapes", "measured": None},
                    {"passed": True, "sentence": "acc", "measured": value},
                ],
            },
        }

    ours = {"score": 0, "tests": [model("test_regression", 3.31456), model("test_logistic", 0.9066),
                                  model("test_mlp", 0.93604), model("test_linear", 1.0)]}
    report = gradescope.gradescope_results(ours, [], gradescope.Options("after_published", "text", True, "hidden"))
    assert report["leaderboard"] == [{"name": "Regression: test MSE", "value": 3.3146, "order": "asc"},
                                     {"name": "Logistic regression: test accuracy", "value": 0.9066, "order": "desc"},
                                     {"name": "Two-layer network: test accuracy", "value": 0.936, "order": "desc"}]


def test_gradescope_options_come_from_course_toml(tmp_path):
    from coursekit.config import ConfigError

    assert gradescope.Options.of(COURSE) == gradescope.Options("after_published", "text", False, "hidden")
    (tmp_path / "course.toml").write_text(
        '[gradescope]\nvisibility = "visible"\noutput_format = "md"\nleaderboard = true\n'
    )
    assert gradescope.Options.of(Course(tmp_path)) == gradescope.Options("visible", "md", True, "hidden")
    (tmp_path / "course.toml").write_text('[gradescope]\nvisibility = "soon"\n')
    with pytest.raises(ConfigError, match="visibility"):
        gradescope.Options.of(Course(tmp_path))


def test_gradescope_writes_a_zero_with_the_reason_when_the_grader_breaks(tmp_path, monkeypatch):
    def broken(root, course):
        raise RuntimeError("no worker could start")

    monkeypatch.setenv("AUTOGRADER_ROOT", str(tmp_path))
    monkeypatch.setattr(gradescope, "grade", broken)
    assert gradescope.main() == 0
    report = read_results(tmp_path)
    assert report["score"] == 0 and "RuntimeError: no worker could start" in report["output"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_gradescope_writes_a_zero_when_no_sandbox_can_start(tmp_path, monkeypatch):
    """bubblewrap refused and not root (so no fallback): grading does not start, results.json says why."""
    from coursekit.grading import bubblewrap

    monkeypatch.setenv("AUTOGRADER_ROOT", str(tmp_path))
    monkeypatch.setattr(bubblewrap, "bubblewrap_works", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(gradescope, "grade_notebook", lambda *args, **kwargs: pytest.fail("graded without a sandbox"))
    assert gradescope.main() == 0
    report = read_results(tmp_path)
    assert report["score"] == 0 and gradescope.NO_SANDBOX in report["output"]


@pytest.mark.parametrize("python, why", [("/bin/false", "(exit status 1)"),  # no Python, or a broken one
                                         ("kill", "(killed, most often for lack of memory")])  # Gradescope's OOM killer
def test_run_autograder_writes_results_even_when_the_grader_dies(tmp_path, python, why):
    root = tmp_path / "autograder"
    unzip(gradescope.write_zip(COURSE, tmp_path / "autograder.zip"), root / "source")
    if python == "kill":
        fake_command(tmp_path, "python", "kill -9 $$")
        python = str(tmp_path / "python")
    run = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(root), "COURSEKIT_PYTHON": python})
    assert run.returncode == 0, run.stderr
    report = read_results(root)
    assert report["score"] == 0 and f"stopped before writing its results {why}" in report["output"]


# ---------------------------------------------------------------- execution_time

def test_execution_time_is_the_time_spent_before_the_report_is_written(tmp_path):
    written = []

    def sleeps(runner, submission):
        time.sleep(0.3)

    def reports(runner, submission):  # as write_report does: results.json from the record
        written.append(results_json(submission)["execution_time"])

    run_steps(None, Submission("student", tmp_path / "notebook.ipynb"), (sleeps, reports))
    assert written[0] >= 0.3


