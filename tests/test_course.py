"""Course configuration and the class-level plumbing that needs no sandbox."""
from __future__ import annotations

import csv
import json

import pytest

from coursekit.grading.batch import shard
from coursekit.grading.pipeline import Course
from coursekit.grading.bubblewrap import Limits


def test_course_config_switches_the_policy_and_sets_limits(tmp_path):
    (tmp_path / "course.toml").write_text("[policy]\nno_autograd = false\n[limits]\nmemory_gib = 2\ncell_seconds = 7\n")
    course = Course(tmp_path)
    assert course.policy().no_autograd is False
    limits = course.limits()
    assert (limits.memory_bytes, limits.cell_seconds, limits.notebook_seconds) == (2 * 2**30, 7, Limits().notebook_seconds)


def test_defaults_without_a_config(tmp_path):
    assert Course(tmp_path).policy().no_autograd is True and Course(tmp_path).limits() == Limits()


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
    from coursekit.grading.score import violations_from

    completed = SimpleNamespace(out_of_memory=False, timed_out=False, returncode=0)
    assert run_problems({"cells": ["not", "a", "dict"]}, completed) == []
    assert run_problems({"cells": {"x": "y", "10": {"status": "error: E"}, "9": {"status": "ok"}}}, completed) == ["cell 10: error: E"]
    assert [v.cell for v in violations_from([], ["junk", {"cell": 3, "found": ["a"]}], [])] == [3]


@pytest.mark.parametrize("spec", ["2", "a/b", "1/2/3", "0/3", "4/3", ""])
def test_a_malformed_shard_is_a_usage_error(spec, capsys):
    from coursekit.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["autograde", "--shard", spec])
    assert stop.value.code == 2 and "shard" in capsys.readouterr().err.splitlines()[-1]


def write_results(root, student, score, review):
    folder = root / "autograded" / student / "classifier_from_scratch"
    folder.mkdir(parents=True)
    tests = [{"name": "Part 1: test_linear", "score": score, "max_score": 8}]
    (folder / "results.json").write_text(json.dumps({"score": score, "tests": tests,
                                                     "extra_data": {"pending_manual": {}, "review": review}}))


def test_grades_and_the_review_list_show_who_needs_a_person(tmp_path):
    from coursekit.grading.report import export_class

    flagged = {"severity": "review", "rule": "dynamic-code", "cell": 7, "line": 2, "code": "eval(s)", "message": "m1"}
    violation = {"severity": "violation", "rule": "torch-nn", "cell": 9, "line": 1, "code": "F.relu(x)", "message": "m2"}
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
    from coursekit.grading.sanitize import EditableCell
    from coursekit.grading.scan import Finding
    from coursekit.grading.score import Violation

    editable = [EditableCell(4, "x = 1\ny = eval('2')", "answer")]
    items = review_items([Violation("answer", 4, None, "grad mode is on")],
                         [Finding("suspicious", "dynamic-code", 4, 2, "eval hides code")], editable)
    assert [(i.severity, i.rule, i.cell, i.line, i.code) for i in items] == [
        ("violation", "autograd-at-run-time", 4, None, ""), ("review", "dynamic-code", 4, 2, "y = eval('2')")]


def test_guard_records_become_violations_of_the_students_cells_only():
    from coursekit.grading.sanitize import EditableCell
    from coursekit.grading.score import Violation, guard_violations

    editable = [EditableCell(3, "def log_softmax(z): ...", "log_softmax"), EditableCell(9, "x = 1", "train")]
    call = {"cell": 3, "line": 2, "api": "torch.log_softmax", "rule": "ready-made", "dynamic": False}
    log = {"forbidden_calls": [call, {**call, "cell": 4},                        # 4: a provided cell
                               {**call, "cell": 4, "dynamic": True, "line": 1},  # exec'd code run by cell 4
                               {**call, "line": 5}, {**call, "rule": "made-up"}, "junk", {"cell": "3"}],
           "guard_removed_at": 9}
    found = guard_violations(log, editable, [Violation("log_softmax", 3, 5, "static", "ready-made")])
    assert [(v.owner, v.cell, v.line, v.rule) for v in found] == [
        ("log_softmax", 3, 2, "runtime-ready-made"), ("log_softmax", 4, None, "runtime-ready-made"),
        ("train", 9, None, "runtime-guard-removed")]
    assert found[1].message.startswith("`torch.log_softmax` was called by code created at run time")
