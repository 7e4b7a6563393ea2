"""Grade a class: submissions through the pipeline in parallel (each in its own sandbox), each one's
report written by its last step, the gradebook and the class's files as they finish."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from coursekit.course.gradebook import record_graded
from coursekit.config import Course
from coursekit.grading.pipeline import Grader, Submission
from coursekit.grading.report import export_class

logger = logging.getLogger(__name__)


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


def parse_shard(spec: str) -> tuple[int, int]:
    """`K/N` as (K, N); ValueError with a one-line reason otherwise."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"shard {spec!r}: expected K/N, two whole numbers such as 2/5")
    index, count = int(parts[0]), int(parts[1])
    if not 1 <= index <= count:
        raise ValueError(f"shard {spec!r}: expected K/N with 1 <= K <= N")
    return index, count


def shard(students: list[str], spec: str | None) -> list[str]:
    """`K/N`: the K-th of N interleaved slices (1-based), for CI job matrices."""
    if not spec:
        return students
    index, count = parse_shard(spec)
    return students[index - 1::count]


def grade_class(course: Course, students: list[str] | None = None, jobs: int | None = None,
                require_sandbox: bool = False, progress: bool = True) -> list[Submission]:
    students = students if students is not None else course.students()
    jobs = max(1, jobs or os.cpu_count() or 1)
    results = []
    with Grader(course, require_sandbox=require_sandbox, threads=max(1, (os.cpu_count() or 1) // jobs),
                mpl_cache=matplotlib_cache(course), workers=min(jobs, max(1, len(students)))) as grader, \
            ThreadPoolExecutor(jobs) as pool, tqdm(total=len(students), desc="Grading", unit="submission",
                                                   disable=not progress, mininterval=1) as bar:
        futures = {pool.submit(grade_safely, grader, student): student for student in students}
        try:
            for future in as_completed(futures):
                result = future.result()
                record_graded(course, result)
                results.append(result)
                bar.set_postfix_str(f"{result.student}: {result.score:g}")
                bar.update()
        finally:
            pool.shutdown(cancel_futures=True)
    results.sort(key=lambda r: r.student)
    export_class(course)
    return results
