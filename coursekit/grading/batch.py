"""Grade a class: submissions through the pipeline in parallel (each in its own sandbox), each one's
report written by its last step, then the class-level steps: the gradebook as each finishes, the class's
files at the end."""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from coursekit.config import Course
from coursekit.course.gradebook import record_graded
from coursekit.grading.pipeline import Grader
from coursekit.grading.record import Submission
from coursekit.grading.report import export_class

logger = logging.getLogger(__name__)

# The class-level steps, after each submission's GRADING_STEPS (pipeline.py): every graded submission goes
# through WHEN_GRADED as soon as it is done (so the gradebook keeps it if the batch is stopped), then the
# class through AFTER_ALL once every submission is graded.
WHEN_GRADED: tuple[Callable[[Course, Submission], None], ...] = (record_graded,)
AFTER_ALL: tuple[Callable[[Course], object], ...] = (export_class,)


def matplotlib_cache(course: Course) -> Path:
    """Build matplotlib's font cache once, so that no sandboxed run spends seconds rebuilding it."""
    cache = course.root / ".cache" / "matplotlib"
    if not any(cache.glob("fontlist-*.json")):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True,
                       env={**os.environ, "MPLCONFIGDIR": str(cache)})
    return cache


def grade_safely(grader: Grader, student: str) -> Submission:
    """A grader bug on one submission is reported on that submission; the batch goes on."""
    try:
        return grader.grade(student)
    except Exception:
        detail = traceback.format_exc(limit=3)
        logger.error("internal grader error on %s:\n%s", student, detail)
        return grader.failed(student, "internal grader error; the course staff has been told "
                                      f"({detail.strip().splitlines()[-1][:200]})", rule="grader-error")


@dataclass(frozen=True)
class SchedulerIndex:
    """Where a scheduler tells a task which one it is: its index, the array's first index (absent: 0) and
    the number of tasks (absent: the scheduler does not say, `--shard auto/N` must)."""
    variable: str
    first: str | None = None
    count: str | None = None


SCHEDULER_INDEXES = (
    SchedulerIndex("SLURM_ARRAY_TASK_ID", first="SLURM_ARRAY_TASK_MIN", count="SLURM_ARRAY_TASK_COUNT"),
    SchedulerIndex("JOB_COMPLETION_INDEX"),  # Kubernetes Indexed Job, 0-based
    # GitHub Actions sets no variable: the workflow passes `${{ strategy.job-index }}` and `job-total`.
    SchedulerIndex("STRATEGY_JOB_INDEX", count="STRATEGY_JOB_TOTAL"),
)


@dataclass(frozen=True)
class Shard:
    index: int   # 1-based
    count: int
    source: str  # what it was read from: the `K/N` given, or the scheduler's variable

    def of(self, students: list[str]) -> list[str]:
        """The K-th of N interleaved slices, so that every shard gets a share of any ordering."""
        return students[self.index - 1::self.count]


def whole_number(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{what} = {text!r}: expected a whole number")
    return int(text)


def parse_shard(spec: str, environ: Mapping[str, str] = os.environ) -> Shard:
    """`K/N`, `auto/N` (K from the scheduler) or `auto` (N too) as a Shard; ValueError with a one-line
    reason otherwise."""
    parts = spec.split("/")
    if len(parts) > 2 or parts[0].strip() != "auto" and len(parts) != 2:
        raise ValueError(f"shard {spec!r}: expected K/N (two whole numbers such as 2/5), auto/N or auto")
    count = whole_number(parts[1], f"shard {spec!r}: N") if len(parts) == 2 else None
    if count == 0:
        raise ValueError(f"shard {spec!r}: N must be at least 1")
    if parts[0].strip() == "auto":
        return shard_from_scheduler(count, environ)
    index = whole_number(parts[0], f"shard {spec!r}: K")
    if count is None or not 1 <= index <= count:
        raise ValueError(f"shard {spec!r}: expected K/N with 1 <= K <= N")
    return Shard(index, count, spec)


def shard_from_scheduler(count: int | None, environ: Mapping[str, str]) -> Shard:
    found = [scheduler for scheduler in SCHEDULER_INDEXES if environ.get(scheduler.variable, "").strip()]
    if len(found) != 1:
        names = ", ".join(scheduler.variable for scheduler in SCHEDULER_INDEXES)
        raise ValueError(f"--shard auto: {'more than one' if found else 'none'} of {names} is set")
    scheduler = found[0]
    told = number_in(environ, scheduler.count)
    if count is None:
        if told is None:
            raise ValueError(
                f"--shard auto: {scheduler.variable} gives the index, not the number of shards: use auto/N"
            )
        count = told
    elif told is not None and count != told:
        raise ValueError(f"--shard auto/{count}: the scheduler runs {told} tasks ({scheduler.count}={told})")
    offset = task_offset(scheduler, environ)
    if not 0 <= offset < count:
        raise ValueError(f"--shard auto/{count}: {scheduler.variable}={environ[scheduler.variable]} is not one of "
                         f"{count} consecutive indexes (use an array such as 0-{count - 1} or 1-{count})")
    return Shard(offset + 1, count, f"{scheduler.variable}={environ[scheduler.variable]}")


def task_offset(scheduler: SchedulerIndex, environ: Mapping[str, str]) -> int:
    """This task's place in its array, from 0 (a Slurm array may start at 1, or anywhere)."""
    return whole_number(environ[scheduler.variable], scheduler.variable) - (number_in(environ, scheduler.first) or 0)


def number_in(environ: Mapping[str, str], name: str | None) -> int | None:
    return whole_number(environ[name], name) if name and name in environ else None


def shard(students: list[str], spec: str | None) -> list[str]:
    """The students of shard `spec` (see parse_shard); all of them without one."""
    if not spec:
        return students
    chosen = parse_shard(spec)
    logger.info("shard %d/%d (%s): %d of %d students", chosen.index, chosen.count, chosen.source,
                len(chosen.of(students)), len(students))
    return chosen.of(students)


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use, not the machine's: its CPU affinity (a Slurm allocation, taskset)
    and its container's CPU quota (a Kubernetes limit). A shard on a big node would otherwise start a
    torch thread per core of the node in every worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    return max(1, min(cores, quota) if quota else cores)


def cpu_quota(cgroup: Path) -> int | None:
    """The cgroup's CPU quota in whole cores (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); None without one."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()
        else:
            quota, period = (
                (cgroup / "cpu" / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")
            )
    except (OSError, ValueError):
        return None
    return None if quota in ("max", "-1") else max(1, math.ceil(int(quota) / int(period)))


def grade_class(course: Course, students: list[str] | None = None, jobs: int | None = None,
                require_sandbox: bool = False, progress: bool = True) -> list[Submission]:
    students = students if students is not None else course.students()
    cores = available_cores()
    jobs = max(1, jobs or cores)
    results = []
    with Grader(course, require_sandbox=require_sandbox, threads=max(1, cores // jobs),
                mpl_cache=matplotlib_cache(course), workers=min(jobs, max(1, len(students)))) as grader, \
            ThreadPoolExecutor(jobs) as pool, tqdm(total=len(students), desc="Grading", unit="submission",
                                                   disable=not progress, mininterval=1) as bar:
        futures = {pool.submit(grade_safely, grader, student): student for student in students}
        try:
            for future in as_completed(futures):
                result = future.result()
                for step in WHEN_GRADED:
                    step(course, result)
                results.append(result)
                bar.set_postfix_str(f"{result.student}: {result.score:g}")
                bar.update()
        finally:
            pool.shutdown(cancel_futures=True)
    results.sort(key=lambda r: r.student)
    for class_step in AFTER_ALL:
        class_step(course)
    return results
