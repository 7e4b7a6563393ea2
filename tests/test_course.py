"""Course configuration and the class-level plumbing that needs no sandbox."""
from __future__ import annotations

import pytest

from coursekit.grading.batch import shard
from coursekit.grading.pipeline import Course
from coursekit.grading.sandbox import Limits


def test_course_config_switches_the_policy_and_sets_limits(tmp_path):
    (tmp_path / "course.toml").write_text("[policy]\nno_autograd = false\n[limits]\nmemory_gib = 2\ncell_seconds = 7\n")
    course = Course(tmp_path)
    assert course.policy().no_autograd is False
    limits = course.limits()
    assert (limits.memory_bytes, limits.cell_seconds, limits.notebook_seconds) == (2 * 2**30, 7, Limits().notebook_seconds)


def test_defaults_without_a_config(tmp_path):
    assert Course(tmp_path).policy().no_autograd is True and Course(tmp_path).limits() == Limits()


def test_students_skip_hidden_folders(tmp_path):
    for name in ("b", "a", ".ipynb_checkpoints", "zoë o'brien"):
        (tmp_path / "submitted" / name).mkdir(parents=True)
    assert Course(tmp_path).students() == ["a", "b", "zoë o'brien"]


def test_shards_cover_the_class_once():
    students = [f"s{i}" for i in range(7)]
    parts = [shard(students, f"{k}/3") for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == students and parts[0] == ["s0", "s3", "s6"]
    with pytest.raises(ValueError):
        shard(students, "4/3")


def test_a_forged_run_log_cannot_crash_the_grader():
    from types import SimpleNamespace

    from coursekit.grading.pipeline import run_problems
    from coursekit.grading.score import violations_from

    completed = SimpleNamespace(out_of_memory=False, timed_out=False, returncode=0)
    assert run_problems({"cells": ["not", "a", "dict"]}, completed) == []
    assert run_problems({"cells": {"x": "y", "10": {"status": "error: E"}, "9": {"status": "ok"}}}, completed) == ["cell 10: error: E"]
    assert [v.cell for v in violations_from([], ["junk", {"cell": 3, "found": ["a"]}], [])] == [3]
