"""Grading throughput: coursekit with -j 1 and -j N against plain sequential `nbgrader autograde`,
on the same K copies of the example submissions, in one run. Prints a Markdown table for the README.

    .venv/bin/python bench/throughput.py [--copies 5] [--jobs 2] [--skip-serial] [--skip-nbgrader] [--skip-snapshot]

Also, unless --skip-snapshot: -j N without the preamble snapshot (every kernel runs the leading provided
cells itself), for the snapshot's gain; and -j N's wall time against its limit, the sum of the
submissions' own cell times (the provided preamble counted once) over the cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coursekit.config import Course  # noqa: E402
from coursekit.grading import environment  # noqa: E402
from coursekit.grading.batch import grade_class  # noqa: E402

# Examples that a plain nbgrader run can grade in comparable time (carol's endless loop would cost
# nbgrader its whole cell timeout, frank's broken file nothing at all).
RELEASE = "release/classifier_from_scratch/classifier_from_scratch.ipynb"
EXAMPLES = ("alice_complete", "bob_uses_autograd", "dave_edits_tests", "erin_partial")


def make_course(folder: Path, copies: int) -> Course:
    for name in ("source", "release"):
        shutil.copytree(ROOT / name, folder / name)
    for name in ("course.toml", "nbgrader_config.py"):
        shutil.copy(ROOT / name, folder / name)
    course = Course(folder)
    for copy in range(copies):
        for example in EXAMPLES:
            shutil.copytree(
                ROOT / "submitted" / example / course.assignment, course.submission(f"{example}_{copy:02d}")
            )
    return course


def run_coursekit(course: Course, jobs: int) -> tuple[float, list]:
    start = time.monotonic()
    results = grade_class(course, jobs=jobs, require_sandbox=True, progress=False)
    seconds = time.monotonic() - start
    unread = [r.student for r in results if r.executed is None]
    if unread:
        raise SystemExit(f"benchmark broken: nothing ran for {unread}")
    return seconds, results


def run_without_snapshot(course: Course, jobs: int) -> tuple[float, list]:
    """The same grading, every kernel running the leading provided cells itself."""
    leading = environment.leading_provided_cells
    environment.leading_provided_cells = lambda release: ()
    try:
        return run_coursekit(course, jobs)
    finally:
        environment.leading_provided_cells = leading


def cell_seconds(executed) -> list[float]:
    """Each code cell's run time, from the timestamps nbclient records (0 for a cell without them)."""
    seconds = []
    for cell in (c for c in executed.cells if c.cell_type == "code"):
        timing = cell.metadata.get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        seconds.append((datetime.fromisoformat(end.replace("Z", "+00:00")) -
                        datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds() if start and end else 0.0)
    return seconds


def limit_seconds(results, preamble_cells: int, cores: int) -> float:
    """The submissions' own cell times, with the preamble (their first `preamble_cells` code cells)
    counted once, over the cores: the wall time of perfect parallel grading with nothing else to do."""
    times = [cell_seconds(r.executed) for r in results if r.executed is not None]
    own = sum(sum(t[preamble_cells:]) for t in times)
    preamble = statistics.mean(sum(t[:preamble_cells]) for t in times)
    return (own + preamble) / cores


def run_nbgrader(course: Course) -> float:
    """Seconds of `nbgrader autograde` alone (its `generate_assignment` is done at release time)."""
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    seconds = 0.0
    for command in (["generate_assignment", course.assignment, "--force"], ["autograde", course.assignment, "--force"]):
        start = time.monotonic()
        subprocess.run([str(scripts / "nbgrader"), *command, "--log-level=ERROR"], cwd=course.root, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.monotonic() - start
    return seconds


def scores(results) -> dict:
    return {r.student: [(t.grade_id, t.score) for t in r.parts] for r in results}


def time_by_step(results) -> str:
    """Mean seconds per submission of each pipeline step, and of the notebook's own cells in execute_step."""
    steps: dict[str, list[float]] = {}
    for result in results:
        for name, seconds in result.step_seconds.items():
            steps.setdefault(name, []).append(seconds)
    cells = statistics.mean(sum(cell_seconds(r.executed)) for r in results if r.executed is not None)
    parts = ", ".join(f"{name} {statistics.mean(values):.2f}" for name, values in steps.items())
    return f"Mean seconds per submission by step: {parts}; the notebook's own cells in execute_step: {cells:.2f}"


def measure(args, temp: Path) -> tuple[list[tuple[str, float]], dict]:
    """(grader, wall seconds) rows, and what the report derives from the runs."""
    parallel_seconds, parallel = run_coursekit(make_course(Path(temp, "parallel"), args.copies), args.jobs)
    rows = [(f"coursekit -j {args.jobs}", parallel_seconds)]
    found = {"parallel": parallel_seconds, "by_step": time_by_step(parallel),
             "overhead": statistics.mean(r.seconds - r.sandbox_seconds for r in parallel),
             "peak": max((r.peak_memory_bytes or 0) for r in parallel) / 2**20}
    if not args.skip_serial:
        serial_seconds, serial = run_coursekit(make_course(Path(temp, "serial"), args.copies), 1)
        rows.append(("coursekit -j 1", serial_seconds))
        found.update(serial=serial_seconds, identical=scores(serial) == scores(parallel))
    if not args.skip_snapshot:
        plain_seconds, plain = run_without_snapshot(make_course(Path(temp, "plain"), args.copies), args.jobs)
        rows.append((f"coursekit -j {args.jobs}, no preamble snapshot", plain_seconds))
        preamble_cells = len(environment.leading_provided_cells(nbformat.read(ROOT / RELEASE, as_version=4)))
        found.update(plain=plain_seconds, limit=limit_seconds(plain, preamble_cells, args.jobs))
    if not args.skip_nbgrader:
        rows.append(("nbgrader autograde (sequential)", run_nbgrader(make_course(Path(temp, "nbgrader"), args.copies))))
    return rows, found


def report(args, rows: list[tuple[str, float]], found: dict) -> None:
    count, parallel = args.copies * len(EXAMPLES), found["parallel"]
    print(f"\n{count} submissions ({args.copies} copies of {', '.join(EXAMPLES)}), {os.cpu_count()} cores\n")
    print("| grader | wall seconds | seconds per submission | submissions per minute |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.0f} | {seconds / count:.1f} | {60 * count / seconds:.1f} |")
    print(f"\nGrading overhead per submission (everything but the sandboxed run): {found['overhead']:.2f} s")
    print(found["by_step"])
    print(f"Peak memory of one sandbox: {found['peak']:.0f} MiB")
    if "serial" in found:
        print(f"-j {args.jobs} / -j 1 wall time: {parallel / found['serial']:.2f}; "
              f"scores identical: {found['identical']}")
    if "plain" in found:
        print(f"Preamble snapshot: -j {args.jobs} without it / with it: {found['plain'] / parallel:.2f}")
        print(f"-j {args.jobs} against its limit ({found['limit']:.0f} s: the cells' own times, the preamble once, "
              f"over {args.jobs} cores): {parallel / found['limit']:.2f}x")
    if not args.skip_nbgrader:
        print(f"Throughput vs nbgrader autograde: {rows[-1][1] / parallel:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--copies", type=int, default=5, help="copies of each of the 4 examples (default 5: 20 submissions)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-serial", action="store_true", help="skip the -j 1 run")
    parser.add_argument("--skip-nbgrader", action="store_true")
    parser.add_argument("--skip-snapshot", action="store_true", help="skip the run without the preamble snapshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        rows, found = measure(args, Path(temp))
    report(args, rows, found)


if __name__ == "__main__":
    main()
