"""What the runs of a course's notebooks share: the `Environment` (fixed for the whole run) and the
`WorkerPool` of warm sandboxed workers that the runs borrow one at a time."""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat

from coursekit.config import Course, Limits
from coursekit.data import provision
from coursekit.grading.bubblewrap import Worker, WorkerFailed
from coursekit.grading.rubric import is_test_cell, nbgrader_meta
from coursekit.grading.scan import ScanPolicy

logger = logging.getLogger(__name__)


def locked_code(release: nbformat.NotebookNode) -> str:
    """The release's locked code cells other than tests: what the scan takes as the provided code."""
    return "\n".join(cell.source for cell in release.cells if cell.cell_type == "code"
                     and nbgrader_meta(cell).get("locked") and not is_test_cell(cell))


def leading_provided_cells(release: nbformat.NotebookNode) -> tuple[str, ...]:
    """The release's leading code cells that every submission runs unchanged (locked, before the first
    answer or test cell, and before the first that draws: plots need a kernel). A warm worker runs them
    once and starts every submission's kernel after them."""
    found = []
    for cell in (c for c in release.cells if c.cell_type == "code"):
        meta = nbgrader_meta(cell)
        if not meta.get("locked") or meta.get("solution") or is_test_cell(cell) or "plt." in cell.source:
            break
        found.append(cell.source)
    return tuple(found)


@dataclass(frozen=True)
class Environment:
    """What every run of the course's notebook needs, read once: the release skeleton and its provided
    code, the scan policy, the limits and the MNIST folder."""
    course: Course
    release: nbformat.NotebookNode
    preamble: str                    # locked_code
    snapshot_cells: tuple[str, ...]  # leading_provided_cells
    policy: ScanPolicy
    limits: Limits
    mnist: Path

    @classmethod
    def of(cls, course: Course) -> Environment:
        release = nbformat.read(course.release_notebook, as_version=4)
        return cls(course, release, locked_code(release), leading_provided_cells(release),
                   ScanPolicy(no_autograd=course.settings.no_autograd), course.settings.limits,
                   provision(online=False, progress=False))


class WorkerPool:
    """Workers launched at once and made ready in the background (they import their libraries while the
    grader loads its own data); `take()` lends an idle one for one run. `close()` stops them all, those
    still starting too, and removes their folders."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self.closing = False
        self.idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self.starting: list[threading.Thread] = []
        try:
            for worker in self.workers:
                worker.launch()
        except BaseException:
            self.close()
            raise
        self.starting = [threading.Thread(target=self.when_ready, args=(worker,), daemon=True) for worker in workers]
        for thread in self.starting:
            thread.start()

    def when_ready(self, worker: Worker) -> None:
        try:
            worker.wait_until_ready()
        except WorkerFailed as error:  # retried by the first run that gets this worker, and reported there
            if not self.closing:
                logger.warning("%s", error)
        finally:
            self.idle.put(worker)

    @contextmanager
    def take(self) -> Iterator[Worker]:
        """The next idle worker, waiting for one if need be; it goes back to the idle ones after the block."""
        worker = self.idle.get()
        try:
            yield worker
        finally:
            self.idle.put(worker)

    def close(self) -> None:
        self.closing = True
        for worker in self.workers:
            worker.close()
        for thread in self.starting:
            thread.join()
