"""deploy/: the Slurm array job and the Kubernetes Indexed Job. Checked as far as this machine allows:
the scripts' syntax (bash -n, shellcheck), the manifest against Kubernetes' JSON schemas (offline), every
`coursekit` command they run accepted by the command line, the pods' script with JOB_COMPLETION_INDEX set,
and (slow) grade.sbatch run for two tasks at once as Slurm runs them, then merge.sbatch, for real."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from coursekit.cli import build_parser
from coursekit.config import Course
from coursekit.grading.batch import parse_shard
from postgres_server import Unavailable, start_cluster
from prepared_results import cell_records, export_rows, make_course

ROOT = Path(__file__).resolve().parent.parent
SLURM = ROOT / "deploy" / "slurm"
MANIFEST = ROOT / "deploy" / "k8s" / "grade-job.yaml"
TOOLS = Path(sys.executable).parent
KUBERNETES = ("1.33.0", kubernetes_validate.utils.latest_version())


def documents() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def pod_script(job: dict) -> str:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["bash", "-c"]
    return container["args"][0]


def coursekit_arguments(script: str) -> list[list[str]]:
    """The arguments after `python -m coursekit` of each line that runs it (line continuations joined)."""
    lines = script.replace("\\\n", " ").splitlines()
    return [shlex.split(line.split("-m coursekit", 1)[1]) for line in lines if "-m coursekit" in line]


def parses(arguments: list[str], environ: dict[str, str]) -> str:
    """The command the CLI parser sees, after the shell's expansion of `environ`."""
    expanded = [re.sub(r"\$\{(\w+)(?:\[@\]|:-([^}]*))?\}|\$(\w+)",
                       lambda m: environ.get(m.group(1) or m.group(3), m.group(2) or "shard.db"), a) for a in arguments]
    with pytest.MonkeyPatch.context() as patch:  # --shard auto reads the scheduler's variables
        for name, value in environ.items():
            patch.setenv(name, value)
        return build_parser().parse_args(expanded).command


# ---------------------------------------------------------------- Slurm

@pytest.mark.parametrize("script", ["grade.sbatch", "merge.sbatch", "submit.sh"])
def test_slurm_scripts_are_valid_shell(script):
    assert subprocess.run(["bash", "-n", str(SLURM / script)], capture_output=True, text=True).stderr == ""
    checked = subprocess.run([str(TOOLS / "shellcheck"), str(SLURM / script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_the_array_shards_by_its_task_and_the_merge_follows_every_task():
    grade = (SLURM / "grade.sbatch").read_text()
    assert re.search(r"^#SBATCH --array=\d+-\d+$", grade, re.M)
    environ = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4", "COURSE": "/c"}
    (autograde,) = coursekit_arguments(grade)
    assert parses(autograde, environ) == "autograde" and "--require-sandbox" in autograde
    shard_spec = autograde[autograde.index("--shard") + 1]
    assert (parse_shard(shard_spec, environ).index, parse_shard(shard_spec, environ).count) == (3, 4)
    merge = coursekit_arguments((SLURM / "merge.sbatch").read_text())
    assert [parses(arguments, environ) for arguments in merge] == ["merge-gradebooks", "export"]
    assert "--dependency=\"afterany:" in (SLURM / "submit.sh").read_text()


# ---------------------------------------------------------------- Kubernetes

@pytest.mark.parametrize("version", KUBERNETES)
def test_the_manifest_is_valid_kubernetes(version):
    for doc in documents().values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_would_catch_a_misspelt_field():
    job = documents()["coursekit-grade"]
    job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES[0], strict=True)


def test_the_grading_job_is_indexed_and_the_merge_reads_the_same_volume():
    docs = documents()
    grade, merge, claim = docs["coursekit-grade"], docs["coursekit-merge"], docs["coursekit-course"]
    assert grade["spec"]["completionMode"] == "Indexed"
    (container,) = grade["spec"]["template"]["spec"]["containers"]
    assert {"name": "SHARDS", "value": str(grade["spec"]["completions"])} in container["env"]
    for job in (grade, merge):
        (volume,) = job["spec"]["template"]["spec"]["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    steps = {doc["metadata"]["labels"]["coursekit/step"] for doc in (grade, claim)}
    assert steps == {"grade"} and merge["metadata"]["labels"]["coursekit/step"] == "merge"
    environ = {"SHARDS": "4", "JOB_COMPLETION_INDEX": "0"}
    assert [parses(a, environ) for a in coursekit_arguments(pod_script(grade))] == ["autograde"]
    assert [parses(a, environ) for a in coursekit_arguments(pod_script(merge))] == ["merge-gradebooks", "export"]


def run_pod_script(script: str, course: Path, environ: dict[str, str]) -> subprocess.CompletedProcess:
    """The pod's script on this machine: the volume is `course`, and `python` a stand-in that prints
    the shard and the gradebook the real one would use."""
    bin_dir = course / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "python"
    stand_in.write_text(
        f"#!{sys.executable}\n" + "import os, sys\nprint(os.environ.get('COURSEKIT_DB_URL'), *sys.argv[1:])\n"
    )
    stand_in.chmod(0o755)
    return subprocess.run(["bash", "-c", script.replace("/course", str(course))], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **environ})


def test_each_pod_grades_its_index_into_a_gradebook_of_its_own(tmp_path):
    docs = documents()
    seen = []
    for index in range(4):
        ran = run_pod_script(
            pod_script(docs["coursekit-grade"]), tmp_path, {"SHARDS": "4", "JOB_COMPLETION_INDEX": str(index)}
        )
        db_url, *arguments = ran.stdout.split()
        shard_spec = arguments[arguments.index("--shard") + 1]
        seen.append((parse_shard(shard_spec, {"JOB_COMPLETION_INDEX": str(index)}).index, db_url))
        assert (tmp_path / "shards" / f"shard-{index}").is_dir()
    assert seen == [(k + 1, f"sqlite:///{tmp_path}/shards/shard-{k}/gradebook.db") for k in range(4)]
    for k in range(4):
        (tmp_path / "shards" / f"shard-{k}" / "gradebook.db").touch()
    merged = run_pod_script(pod_script(docs["coursekit-merge"]), tmp_path, {})
    assert merged.returncode == 0
    first, second = merged.stdout.splitlines()
    assert first.split()[-4:] == [str(tmp_path / "shards" / f"shard-{k}" / "gradebook.db") for k in range(4)]
    assert second.split()[-1] == "export"


# ---------------------------------------------------------------- the array, for real (slow)

EXAMPLES = ("alice_complete", "frank_malformed")  # one complete run, one notebook that cannot be read


def course_of_examples(folder: Path, db_url: str | None = None) -> Course:
    course = make_course(folder, db_url)
    for example in EXAMPLES:
        shutil.copytree(ROOT / "submitted" / example, folder / "submitted" / example)
    return course


def run_array(course: Course, gradebook: str) -> None:
    """grade.sbatch as Slurm runs a two-task array (both tasks at once), then merge.sbatch."""
    slurm = {**os.environ, "SLURM_SUBMIT_DIR": str(ROOT), "COURSE": str(course.root), "GRADEBOOK": gradebook,
             "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2",
             "SLURM_CPUS_PER_TASK": "1"}
    tasks = [subprocess.Popen(["bash", str(SLURM / "grade.sbatch")], env={**slurm, "SLURM_ARRAY_TASK_ID": str(task)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for task in (1, 2)]
    for task in tasks:
        output = task.communicate(timeout=1800)[0]
        assert task.returncode == 0, output[-2000:]
    merged = subprocess.run(["bash", str(SLURM / "merge.sbatch")], env=slurm, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr[-2000:]


@pytest.fixture(scope="module")
def graded_by_one_process(tmp_path_factory) -> Course:
    course = course_of_examples(tmp_path_factory.mktemp("one_process") / "course")
    subprocess.run([sys.executable, "-m", "coursekit", "--root", str(course.root), "autograde", "--require-sandbox",
                    "-j", "1"], cwd=ROOT, check=True, capture_output=True)
    return course


def same_gradebook(course: Course, reference: Course) -> None:
    rows = export_rows(course)
    assert [row["student_id"] for row in rows] == list(EXAMPLES) and float(rows[0]["raw_score"]) == 80
    assert rows == export_rows(reference) and cell_records(course) == cell_records(reference)


@pytest.mark.slow
def test_the_array_with_a_gradebook_per_task_merges_into_what_one_process_records(graded_by_one_process, tmp_path):
    course = course_of_examples(tmp_path / "course")
    run_array(course, "per-shard")
    assert sorted(p.relative_to(course.root).as_posix() for p in course.root.glob("shards/*/gradebook.db")) == \
        ["shards/shard-1/gradebook.db", "shards/shard-2/gradebook.db"]
    same_gradebook(course, graded_by_one_process)


@pytest.mark.slow
def test_the_array_into_one_postgresql_gradebook_records_what_one_process_records(graded_by_one_process, tmp_path):
    try:
        with start_cluster() as cluster:
            course = course_of_examples(tmp_path / "course", cluster.create_database())
            run_array(course, "shared")
            assert not list(course.root.glob("shards/*")) and not (course.root / "gradebook.db").exists()
            same_gradebook(course, graded_by_one_process)
    except Unavailable as reason:
        pytest.skip(f"no PostgreSQL server: {reason}")
