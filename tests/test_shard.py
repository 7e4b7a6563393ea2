"""Shards from the scheduler's own task index: `--shard auto/N` and `auto` on Slurm job arrays, Kubernetes
Indexed Jobs and GitHub's job matrix, each covering the class exactly once; and a shard's workers sized
to the cores its scheduler gave it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit.cli import build_parser
from coursekit.grading.batch import available_cores, cpu_quota, parse_shard, shard

ROOT = Path(__file__).resolve().parent.parent

STUDENTS = [f"s{i:02d}" for i in range(11)]


def slurm(task: int, first: int, count: int) -> dict[str, str]:
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_JOB_ID": "4242"}


def covers_the_class_as_k_of_n(environments: list[dict[str, str]], spec: str) -> None:
    shards = [parse_shard(spec, environ) for environ in environments]
    count = len(environments)
    assert [(s.index, s.count) for s in shards] == [(k, count) for k in range(1, count + 1)]
    slices = [s.of(STUDENTS) for s in shards]
    assert sorted(sum(slices, [])) == STUDENTS
    assert slices == [shard(STUDENTS, f"{k}/{count}") for k in range(1, count + 1)]


@pytest.mark.parametrize("first", [0, 1, 7], ids=["array-0-3", "array-1-4", "array-7-10"])
def test_a_slurm_array_shards_by_its_task_id_wherever_it_starts(first):
    tasks = [slurm(first + k, first, 4) for k in range(4)]
    covers_the_class_as_k_of_n(tasks, "auto/4")
    covers_the_class_as_k_of_n(tasks, "auto")  # Slurm says how many tasks there are
    assert parse_shard("auto", tasks[2]).source == f"SLURM_ARRAY_TASK_ID={first + 2}"


def test_a_kubernetes_indexed_job_shards_by_its_completion_index():
    covers_the_class_as_k_of_n([{"JOB_COMPLETION_INDEX": str(k)} for k in range(3)], "auto/3")


def test_a_github_matrix_shards_by_the_strategy_index_the_workflow_passes():
    jobs = [{"STRATEGY_JOB_INDEX": str(k), "STRATEGY_JOB_TOTAL": "5", "GITHUB_ACTIONS": "true"} for k in range(5)]
    covers_the_class_as_k_of_n(jobs, "auto/5")
    covers_the_class_as_k_of_n(jobs, "auto")


@pytest.mark.parametrize("spec, environ, reason", [
    ("auto/4", {}, "none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, STRATEGY_JOB_INDEX is set"),
    ("auto/2", {"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "1"}, "more than one of"),
    ("auto", {"JOB_COMPLETION_INDEX": "0"}, "JOB_COMPLETION_INDEX gives the index, not the number of shards"),
    ("auto/3", slurm(1, 1, 4), "the scheduler runs 4 tasks (SLURM_ARRAY_TASK_COUNT=4)"),
    ("auto/4", {"JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX=4 is not one of 4 consecutive indexes"),
    ("auto/3", slurm(5, 1, 3), "SLURM_ARRAY_TASK_ID=5 is not one of 3 consecutive indexes"),  # --array=1,3,5
    ("auto/2", {"JOB_COMPLETION_INDEX": "one"}, "JOB_COMPLETION_INDEX = 'one': expected a whole number"),
    ("auto/0", {"JOB_COMPLETION_INDEX": "0"}, "N must be at least 1"),
    ("3/2", {}, "expected K/N with 1 <= K <= N"),
    ("2", {}, "expected K/N (two whole numbers such as 2/5), auto/N or auto"),
    ("automatic/2", {"JOB_COMPLETION_INDEX": "0"}, "K = 'automatic': expected a whole number"),
])
def test_a_shard_that_cannot_be_worked_out_says_why(spec, environ, reason):
    with pytest.raises(ValueError) as error:
        parse_shard(spec, environ)
    assert reason in str(error.value)


def test_the_command_line_reads_the_index_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert build_parser().parse_args(["autograde", "--shard", "auto/2"]).shard == "auto/2"
    assert shard(STUDENTS, "auto/2") == STUDENTS[1::2]
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["autograde", "--shard", "auto/2"])
    assert "none of SLURM_ARRAY_TASK_ID" in capsys.readouterr().err


# ---------------------------------------------------------------- a shard's share of its machine

@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
        ({"cpu.max": "garbage\n"}, None),
    ],
    ids=["v2-2", "v2-1.5", "v2-half", "v2-none", "v1-3", "v1-none", "no-cgroup", "junk"],
)
def test_a_containers_cpu_quota_is_read_in_whole_cores(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota
    if quota == 1:
        assert available_cores(tmp_path) == 1


def test_a_shard_uses_the_cores_it_is_given_not_the_machines():
    one_core = min(os.sched_getaffinity(0))
    counted = subprocess.run(
        [sys.executable, "-c", "from coursekit.grading.batch import available_cores as a; print(a())"],
        preexec_fn=lambda: os.sched_setaffinity(0, {one_core}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert counted.stdout.strip() == "1"
