"""(slow) The whole run of each platform's autograder with the real grader, as the platform lays it out."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from coursekit.config import Course
from coursekit.grading.rubric import load_rubric
from coursekit.platforms import classroom50, gradescope
from support import IDENTITY, RUNNER_ENV, read_results, unzip

COURSE = Course(ROOT)


# The venv by its real path: the sandbox makes the resolved venv visible, not a symlink leading to it.
VENV_PYTHON = Path(sys.prefix).resolve() / "bin" / "python"
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$")


# ---------------------------------------------------------------- whole runs (the real grader)

def runner_env(**extra: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    return {**keep, **extra}


@pytest.mark.slow
def test_classroom50_autograder_grades_a_checkout(tmp_path):
    bundle = classroom50.write_bundle(COURSE, tmp_path / "autograders" / "classifier-from-scratch")
    shutil.copytree(bundle / "private", tmp_path / "runner" / "private")  # what the self-hosted runner holds
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "submitted" / "alice_complete" / COURSE.assignment, checkout)
    run = subprocess.run([str(VENV_PYTHON), str(bundle / "autograder.py")], cwd=checkout, capture_output=True,
                         env=runner_env(**RUNNER_ENV, COURSEKIT_PREFIX=str(tmp_path / "runner")), text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((checkout / "result.json").read_text())
    assert set(result) == {"schema", *IDENTITY, "datetime", "graded_at", "score", "max-score", "tests", "submitted_by"}
    assert result["schema"] == "classroom50/result/v1"
    assert {key: result[key] for key in IDENTITY} == {key: RUNNER_ENV[var] for key, var in IDENTITY.items()}
    assert STAMP.match(result["datetime"]) and STAMP.match(result["graded_at"])
    assert result["submitted_by"] == {"username": "alice-s", "id": 4242}
    rubric = load_rubric(COURSE.source_notebook).autograded
    assert [t["test-name"] for t in result["tests"]] == [f"{c.part}: {c.grade_id}" for c in rubric]
    for test, cell in zip(result["tests"], rubric):
        assert {"test-name", "passed", "score", "max-score"} <= set(test)
        assert type(test["passed"]) is bool and type(test["score"]) is int and type(test["max-score"]) is int
        assert test["max-score"] == cell.points and 0 <= test["score"] <= test["max-score"]
        assert test["passed"] == (test["score"] == test["max-score"])
    lost = [(t["test-name"], t.get("output", "")[:800]) for t in result["tests"] if not t["passed"]]
    assert result["score"] == sum(t["score"] for t in result["tests"]) == result["max-score"] == 80, (
        lost
    )  # the solution
    assert "**80 / 80**" in (checkout / "release-body.md").read_text()
    assert "feedback for alice-s" in (checkout / "feedback.html").read_text()


def with_cell(student: str, source: str, dest: Path, early: bool = False) -> Path:
    """A copy of an example submission with one more code cell: at the end, or (`early`) right after the
    first code cell, where a notebook that runs out of time on a loaded machine still reaches it."""
    shutil.copytree(ROOT / "submitted" / student / COURSE.assignment, dest)
    notebook = nbformat.read(dest / COURSE.notebook_name, as_version=4)
    first_code = next(index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    position = first_code + 1 if early else len(notebook.cells)
    notebook.cells.insert(position, nbformat.v4.new_code_cell(source))
    nbformat.write(notebook, dest / COURSE.notebook_name)
    return dest


@pytest.fixture
def open_tmp():
    """A folder every uid may pass through, as /autograder's parent, /, is (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="coursekit-gradescope-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def gradescope_layout(folder: Path, submission: Path) -> Path:
    """Gradescope's layout: source/ (the zip), run_autograder, submission/."""
    root = folder / "autograder"
    unzip(gradescope.write_zip(COURSE, folder / "autograder.zip"), root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    shutil.move(submission, root / "submission")
    return root


def run_autograder(root: Path, **env: str) -> dict:
    run = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True, text=True,
                         env=runner_env(**{"AUTOGRADER_ROOT": str(root), "COURSEKIT_PYTHON": str(VENV_PYTHON), **env}))
    assert run.returncode == 0, run.stdout + run.stderr
    return read_results(root)


@pytest.mark.slow
def test_gradescope_autograder_grades_a_submission(open_tmp):
    submission = with_cell("erin_partial", "import time\ntime.sleep(5)", open_tmp / "erin")
    root = gradescope_layout(open_tmp, submission)
    report = run_autograder(root)
    rubric = load_rubric(COURSE.source_notebook).autograded
    visible = [t for t in report["tests"] if t["visibility"] == "visible"]
    hidden = [t for t in report["tests"] if t["visibility"] == "after_published"]
    assert len(visible) + len(hidden) == len(report["tests"])
    assert [t["name"] for t in hidden] == [f"{c.part}: {c.grade_id}" for c in rubric]
    assert [t["name"].split(":")[0] for t in visible] == [c.grade_id for c in rubric]
    assert [t["max_score"] for t in hidden] == [c.points for c in rubric]
    assert report["score"] == pytest.approx(sum(t["score"] for t in hidden)) == 56  # only the blocks and the regression
    assert {t["status"] for t in visible} == {"passed", "failed"}
    for test in hidden:
        assert test["status"] == ("passed" if test["score"] == test["max_score"] else "failed")
    assert report["execution_time"] >= 5  # the sleeping cell's time is in it
    assert "56" not in report["output"] and "when the course staff publishes the grades" in report["output"]
    assert report["extra_data"]["isolation"] == "bubblewrap"


@pytest.fixture(scope="module")
def python_for_any_uid():
    """The venv's Python where any uid can run it; else (an interpreter under root's home, as with pyenv) a
    venv on the system's Python 3.11 with a hard-linked copy of the same packages (the fallback refuses an
    interpreter its uid cannot run, so the test needs one it can)."""
    from coursekit.grading import unprivileged

    uid = unprivileged.free_uid()
    if unprivileged.runs_as(uid, [VENV_PYTHON.parent.parent], python=str(VENV_PYTHON)):
        yield VENV_PYTHON
        return
    system = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip("no Python 3.11 that an unprivileged uid can run")
    venv = Path(tempfile.mkdtemp(prefix="coursekit-venv-"))
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = venv / "lib" / "python3.11" / "site-packages"
    shutil.rmtree(packages)
    subprocess.run(
        ["cp", "-al", str(VENV_PYTHON.parent.parent / "lib" / "python3.11" / "site-packages"), str(packages)],
        check=True,
    )
    venv.chmod(0o755)
    yield venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="module")
def mnist_for_any_uid():
    """FASTAI_HOME with MNIST where any uid can read it (a hard-linked copy when it sits in root's home)."""
    from coursekit.data import provision

    mnist = provision(online=False, progress=False)
    home = Path(tempfile.mkdtemp(prefix="coursekit-fastai-"))
    (home / "data").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(mnist), str(home / "data" / mnist.name)], check=True)
    subprocess.run(
        [str(VENV_PYTHON), "-c", "from fastai.data.external import fastai_cfg; fastai_cfg()"],  # its config.ini
        env={**os.environ, "FASTAI_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    subprocess.run(["chmod", "-R", "go+rX", str(home)], check=True)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def fake_bwrap(folder: Path) -> str:
    """A `bwrap` that fails as it does under Docker's default seccomp profile; PATH with it first."""
    folder.mkdir(exist_ok=True)
    (folder / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n"
    )
    (folder / "bwrap").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


ATTACKS = """
import json, os, socket
attempts = {{}}
for name, attempt in [
        ("read the grader", lambda: open("{root}/source/course/coursekit/grading/checks.py").read()),
        ("read the submission's metadata", lambda: open("{root}/submission_metadata.json").read()),
        ("write the results", lambda: open("{root}/results/forged.json", "w").write('{{"score": 1000}}')),
        ("reach the network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=5))]:
    try:
        attempt()
        attempts[name] = "succeeded"
    except Exception as error:
        attempts[name] = type(error).__name__
print("ATTEMPTS", json.dumps(attempts))
"""


def attempts_in(root: Path) -> dict:
    executed = nbformat.read(root / "source" / "course" / "autograded" / gradescope.STUDENT / COURSE.assignment /
                             COURSE.notebook_name, as_version=4)
    cell = next(cell for cell in executed.cells if 'print("ATTEMPTS"' in cell.source)
    printed = "".join(o.get("text", "") for o in cell.outputs)
    assert "ATTEMPTS " in printed, cell.outputs
    return json.loads(printed.split("ATTEMPTS ", 1)[1])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback switches uid: root only")
def test_gradescope_grades_in_the_fallback_when_bubblewrap_cannot_start(open_tmp, python_for_any_uid,
                                                                        mnist_for_any_uid):
    """Student code that tries to read the autograder's files, write its results and reach the network
    fails, and the complete solution keeps its 80 points."""
    listener = socket.create_server(("127.0.0.1", 0))
    root = open_tmp / "autograder"
    attacks = ATTACKS.format(root=root, port=listener.getsockname()[1])
    root = gradescope_layout(open_tmp, with_cell("alice_complete", attacks, open_tmp / "alice", early=True))
    (root / "submission_metadata.json").write_text('{"users": [{"email": "alice@example.org"}]}')
    report = run_autograder(root, PATH=fake_bwrap(open_tmp / "bin"), COURSEKIT_PYTHON=str(python_for_any_uid),
                            FASTAI_HOME=str(mnist_for_any_uid))
    assert report["extra_data"]["isolation"] == "unprivileged user"
    assert "ran as an unprivileged user" in report["output"] and "had no network" in report["output"]
    assert report["score"] == 80
    assert attempts_in(root) == {
        "read the grader": "PermissionError",
        "read the submission's metadata": "PermissionError",
        "write the results": "PermissionError",
        "reach the network": "PermissionError",
    }
    assert sorted(p.name for p in (root / "results").iterdir()) == ["results.json"]
    listener.settimeout(0.5)
    with pytest.raises(socket.timeout):
        listener.accept()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs the autograder as another uid: root only")
def test_gradescope_writes_a_zero_with_the_reason_when_no_sandbox_can_run(open_tmp, python_for_any_uid,
                                                                         mnist_for_any_uid):
    """bubblewrap fails as under Docker's seccomp and the autograder is not root, so no fallback either:
    run_autograder grades nothing and still writes a valid results.json that says why."""
    from coursekit.grading import unprivileged

    root = gradescope_layout(open_tmp, with_cell("alice_complete", "print(1)", open_tmp / "alice"))
    uid = unprivileged.free_uid()
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(root)], check=True)
    env = runner_env(AUTOGRADER_ROOT=str(root), COURSEKIT_PYTHON=str(python_for_any_uid),
                     FASTAI_HOME=str(mnist_for_any_uid), PATH=fake_bwrap(open_tmp / "bin"), HOME=str(root))
    run = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True, text=True, env=env,
                         user=uid, group=uid, extra_groups=[])
    assert run.returncode == 0, run.stdout + run.stderr
    report = read_results(root)
    assert report["score"] == 0 and gradescope.NO_SANDBOX in report["output"]
    assert not (root / "source" / "course" / "autograded").exists()  # nothing was graded
