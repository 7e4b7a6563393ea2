"""Grades for an LMS gradebook import, one total per student from nbgrader's gradebook:
autograded + manual - late penalty. A student whose written answers are not graded yet, or who
submitted nothing, gets an empty cell (the LMS leaves that grade alone) and is listed, never a 0.

- Canvas: the columns of Canvas's own gradebook export, `Student, ID, SIS User ID, SIS Login ID,
  Section`, then the assignment's own column as the roster's header names it (`Name (assignment id)`),
  so that Canvas updates that column instead of creating a new one.
- Moodle: an identifier column (mapped to a user field in Moodle's "Import grades from CSV"), the
  grade, and a feedback column.

A student (a folder in submitted/: a Canvas user id from an LMS zip, a GitHub username from a
repository) is found in the roster by any of the match columns, so one roster covers a class
collected both ways; the roster's names are recorded in the gradebook for formgrader."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from coursekit.config import Course, LmsColumns
from coursekit.course.gradebook import StudentTotal
from coursekit.course.inert import write_csv

CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_ASSIGNMENT_COLUMN = re.compile(r"^(?P<name>.+) \((?P<id>\d+)\)$")


@dataclass(frozen=True)
class Roster:
    lms: str                         # "canvas" | "moodle", from the header
    header: list[str]
    people: list[dict[str, str]]     # one row per person


def read_roster(path: Path) -> Roster:
    """Canvas's gradebook export or Moodle's grade export, as CSV (Canvas's "Points Possible" row dropped)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames or []), list(reader)
    if {"Student", "ID"} <= set(header):
        lms = "canvas"
    elif {"First name", "Last name"} <= set(header):
        lms = "moodle"
    else:
        raise ValueError(f"{path} is neither Canvas's gradebook export (Student, ID, ...) nor Moodle's "
                         "(First name, Last name, ...)")
    people = [row for row in rows if (row.get("Student") or "").strip() != "Points Possible"]
    return Roster(lms, header, people)


def match_columns(roster: Roster, settings: LmsColumns, path: Path) -> list[str]:
    """The roster's columns that may hold our student ids (course.toml's `[lms] <lms>_match_columns`)."""
    wanted = settings.match_columns(roster.lms)
    present = [column for column in wanted if column in roster.header]
    if not present:
        raise ValueError(f"{path} has none of the match columns {list(wanted)} "
                         f"(set [lms] {roster.lms}_match_columns in course.toml)")
    return present


def find_people(roster: Roster, columns: list[str], students) -> dict[str, list[dict[str, str]]]:
    """Each student's roster rows: those whose match columns hold the student's id (one, unless ambiguous)."""
    return {student: [person for person in roster.people
                      if any((person.get(column) or "").strip() == student for column in columns)]
            for student in students}


def canvas_column(course: Course, roster: Roster, configured: str, path: Path) -> str:
    """The assignment's column as the roster names it: `[lms] canvas_column` if set (it must be in the
    roster), else the one `Name (id)` column whose name is the assignment's."""
    assignments = [column for column in roster.header if CANVAS_ASSIGNMENT_COLUMN.match(column)]
    if configured:
        if configured not in roster.header:
            raise ValueError(f"{path} has no column {configured!r} ([lms] canvas_column); its assignment columns: "
                             f"{', '.join(assignments) or 'none'}")
        return configured
    wanted = simple_name(course.assignment)
    named = [c for c in assignments if simple_name(CANVAS_ASSIGNMENT_COLUMN.match(c)["name"]) == wanted]  # type: ignore[index]
    if len(named) != 1:
        raise ValueError(f"{path}: no single column named like the assignment {course.assignment!r}; set "
                         f"[lms] canvas_column to one of its assignment columns: {', '.join(assignments) or 'none'}")
    return named[0]


def simple_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def grade_and_note(total: StudentTotal | None) -> tuple[str, str]:
    if total is None:
        return "", "no submission"
    if total.manual_pending:
        return "", "manual grading pending: " + ", ".join(total.manual_pending)
    late = f"includes a late penalty of {total.late_penalty:g} points" if total.late_penalty else ""
    return f"{total.total:g}", late


def lms_table(roster: Roster, column: str, columns: list[str], totals: dict[str, StudentTotal],
              identifier: str) -> tuple[list[list[str]], list[str]]:
    """(rows with the header first, notes for the instructor)."""
    header = [*CANVAS_IDENTITY, column] if roster.lms == "canvas" else [identifier, column, "Feedback"]
    found = find_people(roster, columns, totals)
    notes = [f"{student}: matches {len(rows)} roster rows (columns {', '.join(columns)}); left out"
             for student, rows in found.items() if len(rows) > 1]
    notes += [f"{student}: graded but not in the roster (columns {', '.join(columns)})"
              for student, rows in found.items() if not rows]
    rows = [header]
    for person in roster.people:
        students = [student for student, matched in found.items() if matched == [person]]
        grade, note = grade_and_note(totals[students[0]]) if len(students) == 1 else \
            ("", "graded as " + " and ".join(students) if students else "no submission")
        if not grade:
            notes.append(f"{' and '.join(students) or person_name(person)}: {note}; left blank")
        identity = (
            [person.get(c, "") for c in CANVAS_IDENTITY] if roster.lms == "canvas" else [person.get(identifier, "")]
        )
        rows.append([*identity, grade] + ([] if roster.lms == "canvas" else [note]))
    return rows, notes


def person_name(person: dict[str, str]) -> str:
    return person.get("Student") or " ".join(filter(None, (person.get("First name"), person.get("Last name")))) or "?"


def names(person: dict[str, str]) -> dict[str, str]:
    """nbgrader's first_name, last_name and email from a roster row (Canvas writes "Last, First")."""
    if "Student" in person:
        last, _, first = person["Student"].partition(",")
        return {"first_name": first.strip(), "last_name": last.strip()}
    return {"first_name": person.get("First name", "").strip(), "last_name": person.get("Last name", "").strip(),
            "email": person.get("Email address", "").strip()}


def roster_names(course: Course, path: Path, students) -> dict[str, dict[str, str]]:
    """The names of these students, for the ones the roster has exactly once."""
    roster = read_roster(path)
    columns = match_columns(roster, course.settings.lms, path)
    return {
        student: names(rows[0]) for student, rows in find_people(roster, columns, students).items() if len(rows) == 1
    }


def export_lms(course: Course, lms: str, path: Path, out: Path, totals: dict[str, StudentTotal]) -> list[str]:
    roster = read_roster(path)
    if roster.lms != lms:
        raise ValueError(f"{path} looks like {roster.lms.capitalize()}'s roster, not {lms.capitalize()}'s")
    settings = course.settings.lms
    column = canvas_column(course, roster, settings.column(lms), path) if lms == "canvas" \
        else settings.column(lms) or course.assignment
    rows, notes = lms_table(roster, column, match_columns(roster, settings, path), totals, settings.moodle_identifier)
    write_csv(out, rows)
    return notes
