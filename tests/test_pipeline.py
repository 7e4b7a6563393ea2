"""The pipeline's loop: each step runs in order on the one record, which keeps each step's own time."""
from __future__ import annotations

import time

from coursekit.grading.pipeline import run_steps
from coursekit.grading.record import Submission


def test_each_steps_time_is_kept_by_its_name(tmp_path):
    order = []

    def quick(runner, submission):
        order.append("quick")

    def slow(runner, submission):
        order.append("slow")
        time.sleep(0.2)

    submission = run_steps(None, Submission("student", tmp_path / "notebook.ipynb"), (slow, quick))
    assert order == ["slow", "quick"] and list(submission.step_seconds) == ["slow", "quick"]
    assert submission.step_seconds["slow"] >= 0.2 > submission.step_seconds["quick"]
    assert submission.seconds >= sum(submission.step_seconds.values())
