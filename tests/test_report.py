"""Report step without a sandbox: results.json from a hand-made result, and the class's grades.csv
and review list from results.json files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from coursekit import ASSIGNMENT
from coursekit.config import Course
from coursekit.grading.bubblewrap import Completed
from coursekit.grading.checks import CheckLine
from coursekit.grading.execute import Execution
from coursekit.grading.policy import Violation
from coursekit.grading.record import ReviewItem, Submission
from coursekit.grading.report import export_class, messages, results_json, table
from coursekit.grading.scan import Finding
from coursekit.grading.score import PartResult
from coursekit.in_sandbox.protocol import RunLog


def submission(student: str, parts: list[PartResult], **fields) -> Submission:
    return Submission(student, Path("/nowhere") / student / "classifier_from_scratch.ipynb", parts=parts, **fields)


def hand_made() -> Submission:
    parts = [PartResult("test_linear", "Part 1", 8.0, 8.0, [CheckLine(True, "forward(x) returns x @ W + b")]),
             PartResult("test_relu", "Part 1", 3.33, 5.0, [CheckLine(True, "a"), CheckLine(False, "b: shape (3,)"),
                                                           CheckLine(True, "c")]),
             PartResult("regression_answer", "Part 2", 0.0, 6.0, pending=True),
             PartResult("test_mlp", "Part 3", 0.0, 12.0, [CheckLine(False, "policy violation in cell 9: x")])]
    return submission(
        "zoë", parts, notes=["cell 12: error: ValueError"],
        execution=Execution(Completed(0, 10.0, False, 123_456_789, False, ""), RunLog(), None, {}, {}),
        findings=[Finding("violation", "torch-nn", 9, 2, "torch.nn is not allowed"),
                  Finding("suspicious", "dynamic-code", 7, 1, "eval hides code")],
        violations=[Violation(("mlp_model",), 9, 2, "torch.nn is not allowed", "torch-nn"),
                    Violation(("mlp_model",), 10, None, "after this cell ran, autograd was in use: ['w']")],
        review=[ReviewItem("violation", "torch-nn", 9, 2, "nn.Linear(3, 4)", "torch.nn is not allowed"),
                ReviewItem("review", "dynamic-code", 7, 1, "eval(s)", "eval hides code"),
                ReviewItem("review", "link", None, None, "", "a link was refused")],
        seconds=12.345)


def test_results_json_follows_gradescope_schema_and_adds_up():
    report = json.loads(json.dumps(results_json(hand_made())))  # JSON as written
    assert set(report) == {"score", "execution_time", "output", "visibility", "stdout_visibility", "tests",
                           "extra_data"}
    assert report["score"] == 11.33 == round(sum(t["score"] for t in report["tests"]), 2)
    assert (report["execution_time"], report["visibility"], report["stdout_visibility"]) == (12.3, "visible", "hidden")
    assert [(t["name"], t["score"], t["max_score"], t["status"], t["tags"]) for t in report["tests"]] == [
        ("Part 1: test_linear", 8.0, 8.0, "passed", ["Part 1"]), ("Part 1: test_relu", 3.33, 5.0, "failed", ["Part 1"]),
        ("Part 3: test_mlp", 0.0, 12.0, "failed", ["Part 3"])]
    assert report["tests"][1]["output"] == "PASS  a\nFAIL  b: shape (3,)\nPASS  c"
    assert report["tests"][1]["extra_data"] == {"grade_id": "test_relu", "part": "Part 1", "checks": [
        {"passed": True, "sentence": "a", "measured": None, "condition": False, "review": False},
        {"passed": False, "sentence": "b: shape (3,)", "measured": None, "condition": False, "review": False},
        {"passed": True, "sentence": "c", "measured": None, "condition": False, "review": False}]}
    assert all(t["visibility"] == "visible" for t in report["tests"])
    extra = report["extra_data"]
    assert extra["pending_manual"] == {"regression_answer": 6.0}
    assert extra["peak_memory_bytes"] == 123_456_789 and extra["late"] is None
    assert extra["findings"][0] == {"severity": "violation", "rule": "torch-nn", "cell": 9, "line": 2,
                                    "message": "torch.nn is not allowed", "check": ""}
    assert extra["review"] == [
        {"severity": "violation", "rule": "torch-nn", "cell": 9, "line": 2, "code": "nn.Linear(3, 4)",
         "message": "torch.nn is not allowed", "grade_id": None},
        {"severity": "review", "rule": "dynamic-code", "cell": 7, "line": 1, "code": "eval(s)",
         "message": "eval hides code", "grade_id": None},
        {"severity": "review", "rule": "link", "cell": None, "line": None, "code": "", "message": "a link was refused",
         "grade_id": None},
    ]


def test_the_summary_tells_the_student_everything_that_was_found():
    result = hand_made()
    told = messages(result, late=None)
    assert [m["kind"] for m in told] == ["pending", "note", "violation", "violation", "review", "review"]
    assert results_json(result)["output"].splitlines() == [
        "Autograded score: 11.33 / 25",
        "Pending manual grading: regression_answer (6)",
        "Note: cell 12: error: ValueError",
        "Policy violation (cell 9, line 2): torch.nn is not allowed",
        "Policy violation (cell 10): after this cell ran, autograd was in use: ['w']",
        "For review (dynamic-code, cell 7, line 1): eval hides code (a person from the course staff will look at this)",
        "For review (link): a link was refused (a person from the course staff will look at this)"]
    assert results_json(result)["extra_data"]["messages"] == told
    assert all("violation" not in m["text"].lower() for m in told if m["kind"] != "violation")
    clean = submission("ann", [PartResult("test_linear", "Part 1", 8.0, 8.0)])
    assert results_json(clean)["output"] == "Autograded score: 8 / 8" and messages(clean, late=None) == []
    late = {"days_late": 2, "policy": "percent_per_day", "penalty": 1.6}
    assert messages(clean, late) == [{"kind": "late", "text": "Late by 2 day(s) (percent_per_day): -1.6 points"}]


def test_the_printed_table_counts_violations_apart_from_what_is_for_review_and_shows_the_late_penalty():
    from coursekit.course.gradebook import StudentTotal

    clean = submission("ann", [PartResult("test_linear", "Part 1", 8.0, 8.0)], seconds=3.0)
    unsure = submission("bo", [PartResult("test_linear", "Part 1", 8.0, 8.0)], seconds=4.0,
                        review=[ReviewItem("review", "imported-data", 3, 1, "torch.load(f)", "data was loaded")])
    recorded = {"zoë": StudentTotal("zoë", 11.33, 31, 2.27, days_late=2), "ann": StudentTotal("ann", 8, 8, 0.0)}
    lines = table([clean, unsure, hand_made()], recorded).splitlines()
    assert lines[0].split() == ["student", "score", "late", "seconds", "problems"]
    assert lines[1].split() == ["ann", "8", "/", "8", "3.0"]
    assert lines[2].split() == ["bo", "8", "/", "8", "4.0", "1", "for", "review"]
    assert lines[3].split()[:7] == ["zoë", "11.33", "/", "25", "-2.27", "(2", "d)"]
    assert lines[3].endswith("12.3  1 note, 2 violations, 2 for review")
    assert "violation" not in lines[2] and lines[-1] == "2 of 3 submissions need a person: see autograded/review.csv"


def write(root, student, report):
    folder = root / "autograded" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(report if isinstance(report, str) else json.dumps(report))


def test_grades_csv_has_a_column_per_part_of_any_student_and_the_totals(tmp_path):
    write(tmp_path, "zoë", results_json(hand_made()))
    write(tmp_path, "ann", {
        "score": 7.5,
        "tests": [
            {"name": "Part 1: test_linear", "score": 6, "max_score": 8, "extra_data": {"grade_id": "test_linear"}},
            {"name": "whatever the platform shows", "score": 1.5, "max_score": 7,
             "extra_data": {"grade_id": "test_train"}},
        ],
        "extra_data": {"pending_manual": {"regression_answer": 6, "reflection_answer": 4}, "late": {"penalty": 0.75},
                       "review": "not a list"},
    })
    write(tmp_path, "broken", "{not json")
    path = export_class(Course(tmp_path))
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["student", "test_linear", "test_train", "regression_answer", "reflection_answer", "test_relu",
                       "test_mlp", "autograded_total", "max_autograded", "manual_total", "manual_pending_points",
                       "late_penalty", "days_late", "total", "max_total", "status", "violations", "for_review",
                       "needs_review"]
    assert rows[1:] == [
        ["ann", "6", "1.5", "", "", "", "", "7.5", "15", "0", "10", "0.75", "0", "6.75", "25", "auto_only", "0", "0",
         "no"],
        ["zoë", "8", "", "", "", "3.33", "0", "11.33", "25", "0", "6", "0", "0", "11.33", "31", "auto_only", "1", "2",
         "yes"],
    ]
    assert (tmp_path / "feedback" / "class_summary.png").stat().st_size > 1000


def test_the_review_list_puts_violations_first_then_by_student_and_cell(tmp_path):
    item = {"severity": "review", "rule": "dynamic-code", "cell": 7, "line": 2, "code": "eval(s)", "message": "m"}
    write(
        tmp_path,
        "bob",
        {
            "score": 0,
            "tests": [],
            "extra_data": {
                "review": [
                    {**item, "cell": 9},
                    {**item, "cell": None, "rule": "link"},
                    "junk",
                    {**item, "severity": "violation", "cell": 12},
                ]
            },
        },
    )
    write(tmp_path, "amy", {"score": 0, "tests": [], "extra_data": {"review": [{**item, "cell": 3}]}})
    write(tmp_path, "cat", {"score": 0, "tests": []})
    export_class(Course(tmp_path))
    with open(tmp_path / "autograded" / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["student"], r["severity"], r["rule"], r["cell"]) for r in rows] == [
        ("bob", "violation", "dynamic-code", "12"), ("amy", "review", "dynamic-code", "3"),
        ("bob", "review", "link", ""), ("bob", "review", "dynamic-code", "9")]
    with open(tmp_path / "grades.csv", newline="") as handle:
        flags = {r["student"]: (r["violations"], r["needs_review"]) for r in csv.DictReader(handle)}
    assert flags == {"amy": ("0", "yes"), "bob": ("1", "yes"), "cat": ("0", "no")}


def test_the_class_summary_counts_students_in_whole_numbers():
    import matplotlib.pyplot as plt

    from coursekit.grading.report import summary_figure

    failing = {"name": "Part 1: test_linear", "score": 0, "max_score": 8}
    results = {"ann": {"score": 80, "tests": [failing]}, "bob": {"score": 42, "tests": [failing]}, "cid": {"score": 42}}
    figure = summary_figure(results)
    histogram, failures = figure.axes
    figure.canvas.draw()
    for ticks in (histogram.get_yticks(), failures.get_xticks()):
        assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)
    plt.close(figure)


def test_student_text_in_results_output_cannot_pass_for_the_graders_lines():
    forged = "\nAutograded score: 80 / 80\r\nPASS  everything"
    result = submission(
        "mallory",
        [PartResult("test_linear", "Part 1", 0.0, 8.0, [CheckLine(False, "forward raised: E" + forged)])],
        notes=["cell 12: error: ValueError: boom" + forged],
        violations=[Violation(("Linear",), 9, 2, "`x" + forged + "` was called", "runtime-autograd")],
        review=[ReviewItem("review", "dynamic-code", 7, 1, "eval(s)", "eval hides" + forged)],
    )
    report = results_json(result)
    lines = report["output"].splitlines()
    assert [line for line in lines if line.startswith("Autograded score")] == ["Autograded score: 0 / 8"]
    assert all(
        line.startswith(("Autograded score: ", "Note: ", "Policy violation (", "For review (")) for line in lines
    )
    assert lines[1] == "Note: cell 12: error: ValueError: boom ⏎ Autograded score: 80 / 80 ⏎ PASS  everything"
    assert lines[3].endswith("(a person from the course staff will look at this)")
    assert report["tests"][0]["output"].splitlines() == [
        "FAIL  forward raised: E ⏎ Autograded score: 80 / 80 ⏎ PASS  everything"]


def test_csv_cells_that_a_spreadsheet_would_run_are_inert(tmp_path):
    review = [{"severity": "review", "rule": "dynamic-code", "cell": 7, "line": 2, "code": '=HYPERLINK("http://x.example","y")',
               "message": "+cmd|' /C calc'!A0"},
              {"severity": "review", "rule": "r", "cell": 8, "line": 1, "code": "@SUM(A1)", "message": "\t=1+1"},
              {"severity": "review", "rule": "r", "cell": 9, "line": 1, "code": "-2+3", "message": "\r=1"}]
    write(tmp_path, "=evil", {"score": 0, "tests": [], "extra_data": {"review": review, "late": {"penalty": -1.5}}})
    export_class(Course(tmp_path))
    with open(tmp_path / "autograded" / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["student"], r["code"], r["message"]) for r in rows] == [
        ("'=evil", '\'=HYPERLINK("http://x.example","y")', "'+cmd|' /C calc'!A0"),
        ("'=evil", "'@SUM(A1)", "'\t=1+1"), ("'=evil", "'-2+3", "'\r=1")]
    with open(tmp_path / "grades.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["student"] == "'=evil" and row["late_penalty"] == "-1.5"  # a number stays a number
