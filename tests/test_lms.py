"""coursekit export --lms: Canvas's and Moodle's import columns, totals from the gradebook."""
from __future__ import annotations

import csv

import pytest

from coursekit.config import Course
from coursekit.course.gradebook import ManualGrade, StudentTotal
from coursekit.course.lms import export_lms

CANVAS_ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,Homework 1 (311)
    Points Possible,,,,,100
"Doe, Jane",1234,S-01,jdoe,Lab A,
"Roe, Sam",42,S-02,sroe,Lab B,
"Poe, Ed",77,S-03,epoe,Lab A,
"Smith, Jo",88,S-04,jsmith,Lab B,
"""


def graded(student, auto, manual=(), late=0.0) -> StudentTotal:
    grades = [ManualGrade(grade_id, 6, score) for grade_id, score in manual]
    score = auto + sum(score or 0 for _, score in manual)
    return StudentTotal(student, score, 100, late, grades)


TOTALS = {"1234": graded("1234", 80, [("regression_answer", 5), ("reflection_answer", 6)]),
          "42": graded("42", 56, [("regression_answer", 4), ("reflection_answer", 3)], late=6.3),
          "77": graded("77", 70, [("regression_answer", 6), ("reflection_answer", None)]),
          "999": graded("999", 10, [("regression_answer", 1), ("reflection_answer", 1)])}


def read(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def course(tmp_path) -> Course:
    (tmp_path / "course.toml").write_text('[lms]\ncanvas_column = "Homework 1 (311)"\ncanvas_match_columns = ["ID"]\n')
    return Course(tmp_path)


def test_canvas_file_has_canvas_columns_and_blank_for_what_is_not_graded(course, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text(CANVAS_ROSTER)
    notes = export_lms(course, "canvas", roster, tmp_path / "out.csv", TOTALS)
    assert read(tmp_path / "out.csv") == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Homework 1 (311)"],
        ["Doe, Jane", "1234", "S-01", "jdoe", "Lab A", "91"],
        ["Roe, Sam", "42", "S-02", "sroe", "Lab B", "56.7"],
        ["Poe, Ed", "77", "S-03", "epoe", "Lab A", ""],
        ["Smith, Jo", "88", "S-04", "jsmith", "Lab B", ""]]
    assert notes == [
        "999: graded but not in the roster (columns ID)",
        "77: manual grading pending: reflection_answer; left blank",
        "Smith, Jo: no submission; left blank",
    ]


def test_moodle_file_maps_an_identifier_column_with_feedback(course, tmp_path):
    roster = tmp_path / "moodle.csv"
    roster.write_text("First name,Last name,Email address\nJane,Doe,jane@uni.example\nSam,Roe,sam@uni.example\n")
    (course.root / "course.toml").write_text(
        '[lms]\nmoodle_column = "Classifier"\nmoodle_match_columns = ["Email address"]\n'
    )
    totals = {"jane@uni.example": TOTALS["77"], "sam@uni.example": TOTALS["42"]}
    export_lms(course, "moodle", roster, tmp_path / "out.csv", totals)
    assert read(tmp_path / "out.csv") == [
        ["Email address", "Classifier", "Feedback"],
        ["jane@uni.example", "", "manual grading pending: reflection_answer"],
        ["sam@uni.example", "56.7", "includes a late penalty of 6.3 points"]]


def test_a_roster_without_the_matching_column_is_refused(course, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("Name,Email\nJane,j@x\n")
    with pytest.raises(ValueError, match="neither Canvas's gradebook export"):
        export_lms(course, "canvas", roster, tmp_path / "out.csv", TOTALS)
    roster.write_text("Student,ID,Section,Homework 1 (311)\nJane,1,A,\n")
    (course.root / "course.toml").write_text(
        '[lms]\ncanvas_match_columns = ["SIS Login ID"]\ncanvas_column = "Homework 1 (311)"\n'
    )
    with pytest.raises(ValueError, match=r"none of the match columns \['SIS Login ID'\]"):
        export_lms(Course(course.root), "canvas", roster, tmp_path / "out.csv", TOTALS)


def test_roster_text_that_a_spreadsheet_would_run_is_inert(course, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text('Student,ID,SIS User ID,SIS Login ID,Section,Homework 1 (311)\n'
                      '"=HYPERLINK(""http://x.example"",""y"")",1234,@A,-B,+C,\n')
    export_lms(course, "canvas", roster, tmp_path / "out.csv", TOTALS)
    assert read(tmp_path / "out.csv")[1] == ['\'=HYPERLINK("http://x.example","y")', "1234", "'@A", "'-B", "'+C", "91"]


MIXED_ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (310),Classifier from scratch (311),Final Points
"Doe, Jane",1234,S-01,jdoe,Lab A,,,
"Roe, Sam",42,S-02,sroe,Lab B,,,
"Poe, Ed",77,S-03,epoe,Lab A,,,
"""


def test_one_export_covers_a_class_collected_from_canvas_and_from_git(tmp_path):
    """jdoe came from a repository (a username), 42 from a Canvas zip (a user id): both found, and the
    assignment's column is the roster's own, so Canvas updates it instead of adding one."""
    roster = tmp_path / "roster.csv"
    roster.write_text(MIXED_ROSTER)
    totals = {"jdoe": TOTALS["1234"], "42": TOTALS["42"]}
    notes = export_lms(Course(tmp_path), "canvas", roster, tmp_path / "out.csv", totals)
    assert read(tmp_path / "out.csv") == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Classifier from scratch (311)"],
        ["Doe, Jane", "1234", "S-01", "jdoe", "Lab A", "91"],
        ["Roe, Sam", "42", "S-02", "sroe", "Lab B", "56.7"],
        ["Poe, Ed", "77", "S-03", "epoe", "Lab A", ""]]
    assert notes == ["Poe, Ed: no submission; left blank"]


def test_a_student_collected_twice_or_an_unknown_column_is_never_guessed(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text(MIXED_ROSTER)
    notes = export_lms(
        Course(tmp_path), "canvas", roster, tmp_path / "out.csv", {"jdoe": TOTALS["1234"], "1234": TOTALS["42"]}
    )
    assert read(tmp_path / "out.csv")[1][-1] == "" and "jdoe and 1234: graded as jdoe and 1234; left blank" in notes
    roster.write_text(MIXED_ROSTER.replace("Classifier from scratch (311)", "Homework 2 (311)"))
    with pytest.raises(ValueError, match=r"set \[lms\] canvas_column to one of its assignment columns: Quiz 1 \(310\), "
                                         r"Homework 2 \(311\)"):
        export_lms(Course(tmp_path), "canvas", roster, tmp_path / "out.csv", TOTALS)


def test_names_come_from_the_roster(tmp_path):
    from coursekit.course.lms import roster_names

    roster = tmp_path / "roster.csv"
    roster.write_text(MIXED_ROSTER)
    assert roster_names(Course(tmp_path), roster, ["jdoe", "42", "nobody"]) == {
        "jdoe": {"first_name": "Jane", "last_name": "Doe"}, "42": {"first_name": "Sam", "last_name": "Roe"}}
    roster.write_text("First name,Last name,Email address\nJane,Doe,jane@uni.example\n")
    assert roster_names(Course(tmp_path), roster, ["jane@uni.example"]) == {
        "jane@uni.example": {"first_name": "Jane", "last_name": "Doe", "email": "jane@uni.example"}}
