"""Report step: results.json (Gradescope's schema), the executed notebook, an HTML feedback page,
and for the class grades.csv, review.csv and a printed table.

results.json carries the results as data (each part's grade_id and sub-checks with the values they
measured, the notes, violations and review items in `extra_data`); its `output` texts are formatted
from that data for people, and nothing reads them back."""
from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

import nbformat

from coursekit.config import Course
from coursekit.course.gradebook import StudentTotal, recorded_totals
from coursekit.course.inert import one_line, write_csv
from coursekit.course.late import late_status
from coursekit.grading.feedback import STAND_IN, keep_safe_outputs, render_page
from coursekit.grading.record import Submission
from coursekit.grading.score import PartResult

MAX_KEPT_NOTEBOOK_BYTES = 10 * 2**20
PERSON_WILL_LOOK = "(a person from the course staff will look at this)"


def part_output(part: PartResult) -> str:
    """One line per check; a sentence that quotes the student (an exception message) stays on its line."""
    if part.pending:
        return "Pending: graded by hand by the course staff."
    return "\n".join(("PASS  " if line.passed else "FAIL  ") + one_line(line.sentence) for line in part.lines)


def messages(result: Submission, late: dict | None) -> list[dict]:
    """What the student is told besides the parts' checks: {"kind", "text"}, kind one of pending,
    note, violation, review, late. Each text is one line that starts with the grader's label, whatever
    the student's text inside it says."""
    found = []
    pending = [t for t in result.parts if t.pending]
    if pending:
        found.append(
            ("pending", "Pending manual grading: " + ", ".join(f"{t.grade_id} ({t.max_score:g})" for t in pending))
        )
    found += [("note", f"Note: {one_line(note)}") for note in result.notes]
    found += [("violation", f"Policy violation (cell {v.cell}" + (f", line {v.line}" if v.line else "")
               + f"): {one_line(v.message)}") for v in result.violations]
    found += [("review", f"For review ({item.rule}" + (f", cell {item.cell}" if item.cell is not None else "")
               + (f", line {item.line}" if item.line else "") + f"): {one_line(item.message)} {PERSON_WILL_LOOK}")
              for item in result.review if item.severity == "review"]
    if late and late["days_late"]:
        found.append(("late", f"Late by {late['days_late']} day(s) ({late['policy']}): -{late['penalty']:g} points"))
    return [{"kind": kind, "text": text} for kind, text in found]


def results_json(result: Submission, course: Course | None = None) -> dict:
    late = (
        late_status(course.settings.late, course.submission(result.student), result.score)
        if course is not None
        else None
    )
    told = messages(result, late)
    return {
        "score": result.score,
        "execution_time": round(result.seconds, 1),
        "output": "\n".join([f"Autograded score: {result.score:g} / {result.max_autograded:g}"]
                            + [message["text"] for message in told]),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [{"name": f"{t.part}: {t.grade_id}", "score": t.score, "max_score": t.max_score,
                   "status": "passed" if t.passed else "failed", "output": part_output(t), "visibility": "visible",
                   "tags": [t.part], "extra_data": {"grade_id": t.grade_id, "part": t.part,
                                                    "checks": [asdict(line) for line in t.lines]}}
                  for t in result.parts if not t.pending],
        "extra_data": {"pending_manual": {t.grade_id: t.max_score for t in result.parts if t.pending},
                       "messages": told,
                       "violations": [asdict(v) for v in result.violations],
                       "findings": [vars(f) for f in result.findings],
                       "review": [asdict(item) for item in result.review],
                       "peak_memory_bytes": result.peak_memory_bytes, "late": late},
    }


def feedback_html(result: Submission, course: Course) -> str:
    return render_page(course.assignment, result.student, results_json(result, course), result.executed)


def write_submission_report(result: Submission, course: Course) -> None:
    course.autograded(result.student).mkdir(parents=True, exist_ok=True)
    course.feedback(result.student).mkdir(parents=True, exist_ok=True)
    course.results_file(result.student).write_text(json.dumps(results_json(result, course), indent=1))
    course.executed_notebook(result.student).write_text(kept_notebook(result, course))
    course.feedback_page(result.student).write_text(feedback_html(result, course))


def kept_notebook(result: Submission, course: Course) -> str:
    """The executed notebook (safe outputs, size-capped), or a stand-in where nothing could run."""
    if result.executed is None:
        return nbformat.writes(stand_in_notebook(result, course))
    keep_safe_outputs(result.executed)
    text = nbformat.writes(result.executed)
    if len(text.encode()) > MAX_KEPT_NOTEBOOK_BYTES:
        for cell in result.executed.cells:
            if cell.cell_type == "code":
                cell.outputs = []
        text = nbformat.writes(result.executed)
    return text


def stand_in_notebook(result: Submission, course: Course) -> nbformat.NotebookNode:
    """The release notebook under a note saying why nothing ran. formgrader lists only submissions that
    have an autograded notebook: with this one, the written answers can still be graded by hand, from
    the student's own file."""
    notebook = nbformat.read(course.release_notebook, as_version=4)
    where = course.submitted_notebook(result.student).relative_to(course.root)
    note = (
        f"**The grader could not grade this submission:** {html.escape(one_line(result.failure or 'nothing ran'))}\n\n"
        f"Below is the blank release notebook, so that the written answers can be graded here by hand: read them "
        f"in the student's own file, `{where}`, with a text editor (do not run it)."
    )
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(note))
    notebook.metadata[STAND_IN] = True
    return notebook


def load_results(course: Course) -> dict[str, dict]:
    """Every student's results.json under autograded/ (also those merged from CI shards)."""
    results = {}
    for path in course.all_results_files():
        try:
            results[path.parent.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return results


def grade_id_of(test: dict) -> str:
    return str((test.get("extra_data") or {}).get("grade_id", ""))


def grade_columns(results: dict[str, dict]) -> list[str]:
    """Every graded cell's grade_id, in the order the results list them (autograded, then by hand)."""
    columns: dict[str, None] = {}
    for data in results.values():
        columns.update(dict.fromkeys(grade_id_of(t) for t in data.get("tests", [])))
        columns.update(dict.fromkeys(data.get("extra_data", {}).get("pending_manual", {})))
    return list(columns)


GRADES_TOTALS = ("autograded_total", "max_autograded", "manual_total", "manual_pending_points", "late_penalty",
                 "days_late", "total", "max_total", "status", "violations", "for_review", "needs_review")


def grades_row(student: str, data: dict, columns: list[str], recorded: StudentTotal | None) -> list:
    """One student's row: the autograded parts from results.json; the manual grades, the late penalty
    and the total from the gradebook once the submission is recorded there (status `final` or
    `manual_pending`), else from results.json alone (`auto_only`, e.g. grades merged from CI shards)."""
    tests, extra = data.get("tests", []), data.get("extra_data", {})
    scores = {grade_id_of(t): t["score"] for t in tests}
    auto, max_auto = data.get("score", 0), sum(t["max_score"] for t in tests)
    late = extra.get("late") or {}
    if recorded is None:
        manual, pending = {}, sum(extra.get("pending_manual", {}).values())
        penalty, days, status = late.get("penalty", 0), late.get("days_late", 0), "auto_only"
        total, max_total = max(0.0, auto - penalty), max_auto + pending
    else:
        manual = {grade.grade_id: grade.score for grade in recorded.manual if grade.score is not None}
        pending = sum(grade.max_score for grade in recorded.manual if grade.score is None)
        penalty, days = recorded.late_penalty, recorded.days_late
        status = "manual_pending" if recorded.manual_pending else "final"
        total, max_total = recorded.total, recorded.max_score
    items = review_of(data)
    violations = sum(item.get("severity") == "violation" for item in items)
    points = {**scores, **manual}
    return [student, *(f"{points[c]:g}" if c in points else "" for c in columns),
            *(f"{value:g}" for value in (auto, max_auto, sum(manual.values()), pending, penalty)), days,
            f"{total:g}", f"{max_total:g}", status, violations, len(items) - violations, "yes" if items else "no"]


def export_class(course: Course) -> Path:
    """grades.csv (one row per student, one column per graded cell, the totals), review.csv and a
    class summary picture, from results.json and, where there is one, nbgrader's gradebook."""
    results, recorded = load_results(course), recorded_totals(course)
    columns = grade_columns(results)
    path = course.grades_file
    write_csv(path, [["student", *columns, *GRADES_TOTALS],
                     *(grades_row(student, data, columns, recorded.get(student)) for student, data in results.items())])
    write_review_list(results, course.review_file)
    if results:
        class_summary_picture(results, course.class_summary)
    return path


def review_of(data: dict) -> list[dict]:
    items = data.get("extra_data", {}).get("review", [])
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


REVIEW_COLUMNS = ("student", "severity", "rule", "cell", "line", "code", "message")


def write_review_list(results: dict[str, dict], path: Path) -> None:
    """One row per thing a person should look at, in the whole class: violations first."""
    rows = [{"student": student, **item} for student, data in results.items() for item in review_of(data)]
    rows.sort(key=lambda row: (row.get("severity") != "violation", row["student"], row.get("cell") or -1))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, [REVIEW_COLUMNS, *([row.get(column) for column in REVIEW_COLUMNS] for row in rows)])


def class_summary_picture(results: dict[str, dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = summary_figure(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def summary_figure(results: dict[str, dict]):
    """Score histogram and the most failed checks; both count students, in whole numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scores = [data.get("score", 0) for data in results.values()]
    failed: dict[str, int] = {}
    for data in results.values():
        for test in data.get("tests", []):
            if test["score"] < test["max_score"]:
                failed[test["name"]] = failed.get(test["name"], 0) + 1
    worst = sorted(failed.items(), key=lambda item: -item[1])[:8]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.hist(scores, bins=20)
    to_review = sum(bool(review_of(data)) for data in results.values())
    left.set(title=f"Autograded scores ({len(scores)} students, {to_review} need a person: review.csv)",
             xlabel="points", ylabel="students")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.barh([name for name, _ in worst][::-1], [count for _, count in worst][::-1])
    right.set(title="Most failed checks", xlabel="students who lost points")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return figure


def late_cell(recorded: StudentTotal | None) -> str:
    if recorded is None or not (recorded.late_penalty or recorded.days_late):
        return ""
    return f"-{recorded.late_penalty:g} ({recorded.days_late} d)"


def problems_cell(result: Submission) -> str:
    """Counted by kind: only a violation is called one; anything inconclusive is "for review"."""
    for_review = sum(item.severity == "review" for item in result.review)
    counts = [(len(result.notes), "note", "notes"), (len(result.violations), "violation", "violations"),
              (for_review, "for review", "for review")]
    return ", ".join(f"{count} {one if count == 1 else many}" for count, one, many in counts if count)


def table(results: list[Submission], recorded: dict[str, StudentTotal] | None = None) -> str:
    """The end-of-run table; the late penalty as the gradebook has it (extensions included)."""
    recorded = recorded or {}
    width = max([len(r.student) for r in results] + [7])
    lines = [f"{'student':<{width}}  {'score':>12}  {'late':>12}  {'seconds':>7}  problems"]
    for r in results:
        lines.append(f"{r.student:<{width}}  {f'{r.score:g} / {r.max_autograded:g}':>12}  "
                     f"{late_cell(recorded.get(r.student)):>12}  {r.seconds:7.1f}  {problems_cell(r)}".rstrip())
    lines.append(f"\n{sum(bool(r.review) for r in results)} of {len(results)} submissions need a person: "
                 "see autograded/review.csv")
    return "\n".join(lines)
