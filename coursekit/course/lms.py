"""Grades for an LMS gradebook import, one total per student from nbgrader's gradebook:
autograded + manual - late penalty. A student whose written answers are not graded yet, or who
submitted nothing, gets an empty cell (the LMS leaves that grade alone) and is listed, never a 0.

- Canvas: the columns of Canvas's own gradebook export, `Student, ID, SIS User ID, SIS Login ID,
  Section`, then one column named like the Canvas assignment (`Name (assignment id)`).
- Moodle: an identifier column (mapped to a user field in Moodle's "Import grades from CSV"), the
  grade, and a feedback column."""
from __future__ import annotations

import csv
from pathlib import Path

from coursekit.course.gradebook import StudentTotal
from coursekit.course.inert import write_csv
from coursekit.config import Course

CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


def lms_settings(course: Course, lms: str) -> dict:
    """course.toml's [lms]: which roster column holds our student ids, Moodle's identifier, the grade column."""
    section = course.settings.sections["lms"]
    return {"match_column": section[f"{lms}_match_column"], "identifier": section["moodle_identifier"],
            "column": section[f"{lms}_column"] or course.assignment}


def read_roster(path: Path, match_column: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if match_column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no column {match_column!r} (set [lms] *_match_column in course.toml)")
        rows = list(reader)
    # Canvas's own export has a "Points Possible" row under the header
    return [row for row in rows if (row.get("Student") or "").strip() != "Points Possible"]


def grade_and_note(total: StudentTotal | None) -> tuple[str, str]:
    if total is None:
        return "", "no submission"
    if total.manual_pending:
        return "", "manual grading pending: " + ", ".join(total.manual_pending)
    late = f"includes a late penalty of {total.late_penalty:g} points" if total.late_penalty else ""
    return f"{total.total:g}", late


def lms_table(lms: str, roster: list[dict[str, str]], totals: dict[str, StudentTotal],
              settings: dict) -> tuple[list[list[str]], list[str]]:
    """(rows with the header first, notes for the instructor)."""
    header = [*CANVAS_IDENTITY, settings["column"]] if lms == "canvas" \
        else [settings["identifier"], settings["column"], "Feedback"]
    rows, notes, matched = [header], [], set()
    for person in roster:
        student = person.get(settings["match_column"], "").strip()
        matched.add(student)
        grade, note = grade_and_note(totals.get(student))
        if not grade:
            notes.append(f"{student or '(no ' + settings['match_column'] + ')'}: {note}; left blank")
        identity = [person.get(column, "") for column in CANVAS_IDENTITY] if lms == "canvas" \
            else [person.get(settings["identifier"], "")]
        rows.append([*identity, grade] + ([] if lms == "canvas" else [note]))
    notes += [f"{student}: graded but not in the roster (column {settings['match_column']!r})"
              for student in totals if student not in matched]
    return rows, notes


def export_lms(course: Course, lms: str, roster: Path, out: Path, totals: dict[str, StudentTotal]) -> list[str]:
    settings = lms_settings(course, lms)
    rows, notes = lms_table(lms, read_roster(roster, settings["match_column"]), totals, settings)
    write_csv(out, rows)
    return notes
