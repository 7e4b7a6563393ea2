"""Course configuration and the class-level plumbing that needs no sandbox."""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT
from coursekit.config import Collection, ConfigError, Course, Floors, LatePolicy, Limits, LmsColumns
from coursekit.grading.batch import shard
from coursekit.in_sandbox.protocol import OK, ForbiddenCall, RunLog, Status


def test_course_config_switches_the_policy_and_sets_limits_and_floors(tmp_path):
    (tmp_path / "course.toml").write_text("[policy]\nno_autograd = false\n[limits]\nmemory_gib = 2\ncell_seconds = 7\n"
                                          "[floors]\nmlp_accuracy = 0.95\n")
    settings = Course(tmp_path).settings
    assert settings.no_autograd is False
    limits = settings.limits
    assert (limits.memory_bytes, limits.cell_seconds, limits.notebook_seconds) == (
        2 * 2**30,
        7,
        Limits().notebook_seconds,
    )
    assert settings.floors == Floors(mlp_accuracy=0.95) and Floors().mlp_accuracy == 0.90


def test_defaults_without_a_config(tmp_path):
    settings = Course(tmp_path).settings
    assert settings.no_autograd is True and settings.limits == Limits() and settings.floors == Floors()
    assert (settings.late, settings.collect, settings.lms) == (LatePolicy(), Collection(), LmsColumns())


def test_the_typed_sections_are_built_once_from_the_validated_values(tmp_path):
    (tmp_path / "course.toml").write_text('[late]\ndue = "2026-12-04 23:59:00 UTC"\npolicy = "zero"\n'
                                          'grace_minutes = 5\n[collect]\nlms_timezone = "Europe/Paris"\n'
                                          '[lms]\ncanvas_match_columns = ["SIS Login ID"]\nmoodle_column = "HW1"\n')
    settings = Course(tmp_path, "homework_1").settings
    assert settings.late is settings.late and settings.collect is settings.collect and settings.lms is settings.lms
    assert settings.late == LatePolicy(due=datetime(2026, 12, 4, 23, 59), method="zero", grace_seconds=300.0)
    assert settings.collect.lms_timezone == "Europe/Paris" and settings.collect.repositories_prefix("homework_1") == \
        "homework-1"
    assert settings.lms.match_columns("canvas") == ("SIS Login ID",) and settings.lms.column("moodle") == "HW1"
    assert settings.lms.match_columns("moodle") == LmsColumns().moodle_match_columns
    assert settings.lms.column("canvas") == ""


def test_the_courses_paths_are_nbgraders_layout(tmp_path):
    """What the kit writes is where nbgrader's own commands and formgrader look for it."""
    from nbgrader.coursedir import CourseDirectory

    course, nbgrader = Course(tmp_path), CourseDirectory(root=str(tmp_path))

    def folder(step: str) -> Path:
        return Path(nbgrader.format_path(step, "ann", course.assignment))
    assert course.submission("ann") == folder(nbgrader.submitted_directory)
    assert course.autograded("ann") == folder(nbgrader.autograded_directory)
    assert course.feedback_page("ann") == folder(nbgrader.feedback_directory) / f"{course.notebook_id}.html"
    assert course.executed_notebook("ann").name == course.submitted_notebook("ann").name == course.notebook_name
    assert course.notebook_name == f"{course.notebook_id}.ipynb"
    assert course.source_notebook.parent == Path(nbgrader.format_path(nbgrader.source_directory, ".",
                                                                      course.assignment))


def test_the_repositorys_config_is_valid_and_read_once(tmp_path):
    course = Course(ROOT)
    assert course.settings is course.settings and course.settings.sections["late"]["policy"] == "percent_per_day"


@pytest.mark.parametrize("text, words", [
    ("[limits]\nmemry_gib = 2\n", "[limits] memry_gib is not a setting"),
    ("[limit]\nmemory_gib = 2\n", "unknown section [limit]"),
    ("[limits]\ncell_seconds = '60'\n", "[limits] cell_seconds = '60': expected a whole number"),
    ("[limits]\ncell_seconds = 1.5\n", "expected a whole number"),
    ("[limits]\ncell_seconds = 0\n", "expected a number above 0"),
    ("[policy]\nno_autograd = 1\n", "[policy] no_autograd = 1: expected true or false"),
    ("[limits]\nprocesses = true\n", "expected a whole number"),
    ("[late]\npolicy = 'halve'\n", "expected one of 'none', 'zero', 'percent_per_day'"),
    ("[late]\npercent_per_day = -10\n", "[late] percent_per_day = -10: expected a number from 0 to 100"),
    ("[late]\npercent_per_day = 150\n", "expected a number from 0 to 100"),
    ("[late]\ngrace_minutes = -5\n", "[late] grace_minutes = -5: expected a number from 0 up"),
    ("[late]\ndue = 'next friday'\n", "[late] due = 'next friday': expected a date and time such as"),
    ("[late]\ndue = 'friday'\n", "expected a date and time"),
    ("[late]\ndue = '2026-12-04'\n", "expected a date and time"),
    ("[late]\ndue = '2026-13-04 10:00'\n", "expected a date and time"),
    ("policy = 3\n", "policy must be a section"),
    ("[limits\n", "not valid TOML"),
])
def test_a_wrong_setting_is_a_clear_error(tmp_path, text, words):
    (tmp_path / "course.toml").write_text(text)
    with pytest.raises(ConfigError, match=".*".join(map(__import__("re").escape, [words]))):
        Course(tmp_path).settings


@pytest.mark.parametrize("due", ["'2026-12-04 23:59:00 UTC'", "'2026-12-04T23:59:00+01:00'", "2026-12-04T23:59:00Z",
                                 "2026-12-04T23:59:00", "''"])
def test_a_due_date_with_a_date_and_a_time_is_accepted(tmp_path, due):
    (tmp_path / "course.toml").write_text(f"[late]\ndue = {due}\n")
    assert Course(tmp_path).settings.sections["late"]["due"] is not None


@pytest.mark.parametrize("late", ["percent_per_day = -10", "due = 'next friday'"])
def test_the_command_line_stops_at_a_wrong_late_policy_in_one_line(tmp_path, caplog, capsys, late):
    from coursekit.cli import main

    (tmp_path / "course.toml").write_text(f"[late]\n{late}\n")
    assert main(["--root", str(tmp_path), "export"]) == 2
    assert "[late]" in caplog.text and "Traceback" not in caplog.text + capsys.readouterr().err


def test_the_command_line_stops_at_a_wrong_setting(tmp_path, caplog):
    from coursekit.cli import main

    (tmp_path / "course.toml").write_text("[limits]\nmemry_gib = 2\n")
    assert main(["--root", str(tmp_path), "export"]) == 2
    assert "memry_gib is not a setting" in caplog.text


def test_students_skip_hidden_folders(tmp_path):
    for name in ("b", "a", ".ipynb_checkpoints", "zoë o'brien"):
        (tmp_path / "submitted" / name).mkdir(parents=True)
    assert Course(tmp_path).students() == ["a", "b", "zoë o'brien"]


def test_shards_cover_the_class_once():
    students = [f"s{i}" for i in range(7)]
    parts = [shard(students, f"{k}/3") for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == students and parts[0] == ["s0", "s3", "s6"]
    with pytest.raises(ValueError):
        shard(students, "4/3")


def test_a_forged_run_log_cannot_crash_the_grader():
    from types import SimpleNamespace

    from coursekit.grading.pipeline import run_problems
    from coursekit.grading.policy import find_violations

    def problems(log):
        return run_problems(SimpleNamespace(log=RunLog.from_json(log), completed=SimpleNamespace(
            out_of_memory=False, timed_out=False, returncode=0, report="{}")))

    assert problems({"cells": ["not", "a", "dict"]}) == [] and problems("junk") == []
    cells = {"x": {"kind": "error"}, "10": {"kind": "error", "detail": "E"}, "9": {"kind": "ok"},
             "11": {"status": "error"}, "12": "error: E", "13": {"kind": "made-up"}, "²": {"kind": "error"}}
    assert problems({"cells": cells}) == ["cell 10: error: E"]
    assert problems({"notebook_timed_out": "yes", "aborted": 3, "replays": "2"}) == []
    log = RunLog.from_json({"runtime_violations": ["junk", {"cell": 3, "found": ["a"]}], "guard_removed_at": True})
    assert [v.cell for v in find_violations([], log, [], no_autograd=True)] == [3] and log.guard_removed_at is None


def test_the_run_log_reads_back_what_the_runner_wrote():
    log = RunLog(cells={3: OK, 10: Status("timeout", "stopped after 5 s")}, notebook_timed_out=True,
                 probes={"linear": OK}, aborted="the kernel stopped answering", replays=1,
                 forbidden_calls=[ForbiddenCall(3, 2, "torch.Tensor.backward", False, "autograd", ("train",))],
                 guard_removed_at=10)
    assert RunLog.from_json(json.loads(json.dumps(log.to_json()))) == log
    assert log.problems() == [(10, "timeout: stopped after 5 s"),
                              (None, "the notebook reached its time limit; the remaining cells were skipped"),
                              (None, "grading stopped early: the kernel stopped answering")]


@pytest.mark.parametrize("spec", ["2", "a/b", "1/2/3", "0/3", "4/3", ""])
def test_a_malformed_shard_is_a_usage_error(spec, capsys):
    from coursekit.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["autograde", "--shard", spec])
    assert stop.value.code == 2 and "shard" in capsys.readouterr().err.splitlines()[-1]


def write_results(root, student, score, review):
    folder = root / "autograded" / student / "classifier_from_scratch"
    folder.mkdir(parents=True)
    tests = [{"name": "Part 1: test_linear", "score": score, "max_score": 8,
              "extra_data": {"grade_id": "test_linear", "part": "Part 1"}}]
    (folder / "results.json").write_text(json.dumps({"score": score, "tests": tests,
                                                     "extra_data": {"pending_manual": {}, "review": review}}))


def test_grades_and_the_review_list_show_who_needs_a_person(tmp_path):
    from coursekit.grading.report import export_class

    flagged = {"severity": "review", "rule": "dynamic-code", "cell": 7, "line": 2, "code": "eval(s)", "message": "m1"}
    violation = {
        "severity": "violation",
        "rule": "torch-nn",
        "cell": 9,
        "line": 1,
        "code": "F.relu(x)",
        "message": "m2",
    }
    write_results(tmp_path, "ann", 8, [])
    write_results(tmp_path, "bob", 8, [flagged])
    write_results(tmp_path, "cid", 0, [flagged, violation])
    export_class(Course(tmp_path))
    with open(tmp_path / "grades.csv") as handle:
        grades = {row["student"]: (row["violations"], row["needs_review"]) for row in csv.DictReader(handle)}
    assert grades == {"ann": ("0", "no"), "bob": ("0", "yes"), "cid": ("1", "yes")}
    with open(tmp_path / "autograded" / "review.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["student"], r["severity"], r["rule"], r["cell"], r["line"], r["code"]) for r in rows] == [
        ("cid", "violation", "torch-nn", "9", "1", "F.relu(x)"),
        ("bob", "review", "dynamic-code", "7", "2", "eval(s)"),
        ("cid", "review", "dynamic-code", "7", "2", "eval(s)")]


def test_review_items_quote_the_students_line():
    from coursekit.grading.pipeline import review_items
    from coursekit.grading.policy import Violation
    from coursekit.grading.sanitize import EditableCell
    from coursekit.grading.scan import Finding

    editable = [EditableCell(4, "x = 1\ny = eval('2')", "answer")]
    items = review_items([Violation(("regression_model",), 4, None, "grad mode is on")],
                         [Finding("suspicious", "dynamic-code", 4, 2, "eval hides code")], editable)
    assert [(i.severity, i.rule, i.cell, i.line, i.code) for i in items] == [
        ("violation", "autograd-at-run-time", 4, None, ""), ("review", "dynamic-code", 4, 2, "y = eval('2')")]


def test_guard_records_become_violations_of_the_students_cells_only():
    from coursekit.grading.policy import Notebook, guard_violations
    from coursekit.grading.sanitize import EditableCell

    editable = [EditableCell(3, "def log_softmax(z):\n    return z", "log_softmax"), EditableCell(9, "x = 1", "train")]
    call = {"cell": 3, "line": 2, "api": "torch.log_softmax", "rule": "ready-made", "dynamic": False}
    log = {"forbidden_calls": [call, {**call, "cell": 4},                        # 4: a provided cell
                               {**call, "cell": 4, "dynamic": True, "line": 1},  # exec'd code run by cell 4
                               {**call, "line": 5}, {**call, "rule": "made-up"}, "junk", {"cell": "3"}],
           "guard_removed_at": 9}
    found = guard_violations(RunLog.from_json(log), Notebook(editable), {(3, 5)})  # the scan reported line 5
    assert [(v.touches, v.cell, v.line, v.rule) for v in found] == [
        (("log_softmax",), 3, 2, "runtime-ready-made"), ((), 4, None, "runtime-ready-made"),
        ((), 9, None, "runtime-guard-removed")]
    assert found[1].message.startswith("`torch.log_softmax` was called by code created at run time")


def test_autograding_a_misspelt_student_is_an_error_that_names_the_submissions(tmp_path, capsys):
    from coursekit.cli import main

    for name in ("alice", "bob"):
        Course(tmp_path).submission(name).mkdir(parents=True)
    assert main(["--root", str(tmp_path), "autograde", "alcie", "bob"]) == 2
    error = capsys.readouterr().err
    assert "no submission for alcie (submitted/alcie/classifier_from_scratch/ does not exist)" in error
    assert "Did you mean alice?" in error and "submitted/ has 2: alice, bob" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submitted"]  # no gradebook, grades or feedback


def test_release_says_what_it_released_and_records_the_due_date(tmp_path, capfd):
    import shutil

    from coursekit.cli import main
    from coursekit.course.gradebook import open_gradebook

    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    for name in ("nbgrader_config.py", "course.toml"):
        shutil.copy(ROOT / name, tmp_path)
    assert main(["--root", str(tmp_path), "release"]) == 0
    assert main(["--root", str(tmp_path), "release"]) == 0  # again: nbgrader replaces the release
    out, err = capfd.readouterr()
    import nbformat

    from coursekit.grading.rubric import load_rubric

    rubric, course = load_rubric(Course(tmp_path).source_notebook), Course(tmp_path)
    cells = len(nbformat.read(course.release_notebook, as_version=4).cells)
    autograded, manual = sum(c.points for c in rubric.autograded), sum(c.points for c in rubric.manual)
    assert out.splitlines()[-4:] == [
        f"Released classifier_from_scratch: release/classifier_from_scratch/classifier_from_scratch.ipynb ({cells} "
        "cells)",
        f"  graded: {len(rubric.autograded)} test cells, {autograded:g} points autograded; "
        f"{len(rubric.manual)} written answers, {manual:g} points by hand",
        "  due 2026-12-04 23:59 UTC, late work: 10% of the score per day started late after 15 minutes' grace"
        " (course.toml [late])",
        "  recorded in nbgrader's gradebook with its grade cells and due date",
    ]
    assert "Removing existing assignment" not in out + err
    with open_gradebook(Course(tmp_path)) as gradebook:
        assert str(gradebook.find_assignment("classifier_from_scratch").duedate) == "2026-12-04 23:59:00"


@pytest.mark.parametrize("path", ["grades-canvas.csv", "grades-moodle.csv", "nbgrader-grades.csv", "roster.csv",
                                  "similarity/report.html", "grades.csv", "gradebook.db"])
def test_files_with_students_names_and_ids_are_never_committed(path):
    import subprocess

    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0
