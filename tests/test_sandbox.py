"""Execute step in the real sandbox (bubblewrap): isolation, limits, and recovery from bad cells."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from coursekit.config import Limits
from coursekit.data import mnist_path
from coursekit.grading.bubblewrap import Sandbox, bubblewrap_works, python_read_only_paths
from coursekit.grading.execute import execute, new_worker
from coursekit.in_sandbox import protocol

pytestmark = pytest.mark.slow

CELLS = {
    "network": "import urllib.request\ntry:\n    urllib.request.urlopen('https://pypi.org', timeout=5)\n"
               "    print('REACHED')\n"
    "except Exception as error:\n    print('BLOCKED', type(error).__name__)",
    "repository": f"import os\nprint(sorted(os.listdir({str(ROOT)!r})))",
    "write_venv": "import sys\ntry:\n    open(sys.prefix + '/planted', 'w')\n    print('WROTE')\n"
                  "except OSError as error:\n    print('READONLY', error.errno)",
    "whoami": "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]), os.getuid())",
    "forks": "import subprocess\nps = []\ntry:\n    for _ in range(400):\n"
             "        ps.append(subprocess.Popen(['sleep', '30']))\n"
    "except OSError:\n    pass\nprint('STARTED', len(ps))\nfor p in ps:\n    p.kill()\n    p.wait()",
    "flood": "for i in range(2_000_000):\n    print('x' * 50)",
    "memory": "import torch\nx = torch.ones(6 * 2**30 // 4)",
    "memory_creep": "import torch\nchunks = [torch.ones(2**28 // 4) for _ in range(16)]\nprint('SURVIVED')",
    "after_memory": "print('STILL HERE')",
    "loop": "while True:\n    pass",
    "after_loop": "print('AFTER LOOP')",
    "plot": "import matplotlib.pyplot as plt\nplt.figure(figsize=(1, 1), dpi=30)\nplt.plot([1, 3, 2])\nplt.show()",
}


# A submission that tries to leave something behind for the next one in the same worker: a file in
# every place it can write to, 512 MiB in /dev/shm, a sleeping and a spinning process in sessions of
# their own...
WRITABLE = ("/submission", "/tmp", "/dev/shm", "/dev", "/")
LEAVE = {
    "plant": "import os, subprocess, sys, torch\n"
             f"for folder in {WRITABLE!r}:\n"
             "    try:\n        open(os.path.join(folder, 'planted'), 'w').write('x')\n"
             "    except OSError as error:\n        print('NOT WRITABLE', folder, error.strerror)\n"
             "with open('/dev/shm/big', 'wb') as big:\n    for _ in range(8):\n        big.write(bytes(2**26))\n"
             "torch.planted = True\nsys.modules['json'].planted = True\nos.environ['PLANTED'] = '1'\n"
             "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
             "subprocess.Popen(['sh', '-c', 'while :; do :; done'], start_new_session=True)\n"
             "os.fork() or (os.setsid(), __import__('time').sleep(300))\nprint('PLANTED')",
}
# ...and the next one, looking for it and at the worker.
LOOK = {
    "look": "import os, json, torch\n"
            f"print([sorted(os.listdir(folder)) for folder in {WRITABLE!r}], hasattr(torch, 'planted'), "
            "hasattr(json, 'planted'), os.environ.get('PLANTED'))\n"
            "print('LEFT', sum(b'sleep' in c or b'while' in c for c in "
            "(open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit())))",
    "worker_memory": "try:\n    open('/proc/2/mem', 'rb').read(1)\n    print('READ')\nexcept OSError as error:\n"
                     "    print('DENIED', error.errno)",
}
# A submission that kills every process it can see, the warm worker included.
KILL_ALL = {
    "kill_all": "import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
    "        try:\n            os.kill(int(p), signal.SIGKILL)\n        except OSError:\n            pass"
}
AFTER_KILL = {"alive": "print('GRADED', 6 * 7)"}


def notebook_of(cells: dict[str, str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(s) for s in cells.values()],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def run_cells(worker, cells: dict[str, str]):
    """Run a notebook of these cells in worker, as a submission with no other files."""
    return execute(notebook_of(cells), ROOT / "nonexistent", "nb.ipynb", worker, seed=0, probes=())


@pytest.fixture(scope="module")
def worker():
    if not bubblewrap_works():
        pytest.fail("bubblewrap is required for these tests (make sandbox installs it)")
    sandbox = Sandbox([*python_read_only_paths(), mnist_path()], require=True)
    limits = Limits(memory_bytes=3 * 2**30, cell_seconds=8, notebook_seconds=240, processes=64, output_bytes=10_000)
    worker = new_worker(sandbox, limits, mnist_path())
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def run(worker):
    execution = run_cells(worker, CELLS)
    # What it ran in, read now (a later test may stop the worker): a Cgroup, or None with rlimits only;
    # and whether that cgroup has a peak file to read (v1, or v2 on Linux 5.19 and later).
    execution.cgroup = worker.cgroup
    execution.peak_file = bool(worker.cgroup) and worker.cgroup.memory_file("memory.max_usage_in_bytes",
                                                                            "memory.peak").exists()
    return execution


@pytest.fixture(scope="module")
def planted(worker, run):
    execution = run_cells(worker, LEAVE)
    assert "PLANTED" in output_of(execution, "plant", LEAVE)
    return execution


@pytest.fixture(scope="module")
def successor(worker, planted):
    """What a submission sees in the worker after one that tried to leave things behind."""
    return run_cells(worker, LOOK)


def output_of(run, name, cells=CELLS):
    cell = run.executed.cells[list(cells).index(name)]
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def status_of(run, name):
    return run.log.cells[list(CELLS).index(name)]


def test_no_network(run):
    assert "BLOCKED" in output_of(run, "network")


def test_only_the_environment_of_the_repository_is_visible(run):
    assert output_of(run, "repository").strip() == "['.venv']"


def test_system_and_environment_are_read_only(run):
    assert "READONLY 30" in output_of(run, "write_venv")


def test_own_pid_namespace_and_unprivileged_user(run):
    visible_processes, uid = output_of(run, "whoami").split()
    assert int(visible_processes) < 10 and uid == "1000"


def test_process_limit(run):
    started = int(output_of(run, "forks").split()[-1])
    assert 0 < started < 64


def test_output_is_capped(run):
    text = output_of(run, "flood")
    assert len(text) < 20_000 and "output truncated by the grader" in text


def test_memory_limit_stops_a_huge_allocation_and_the_rest_still_runs(run):
    status = status_of(run, "memory")
    assert status.kind == "error" and status.detail.startswith("RuntimeError") and "allocate" in status.detail
    assert "STILL HERE" in output_of(run, "after_memory")


def test_many_smaller_allocations_are_stopped_too(run):
    assert "SURVIVED" not in output_of(run, "memory_creep")
    assert not status_of(run, "memory_creep").ok


def test_cell_time_limit_stops_an_endless_loop_and_the_rest_still_runs(run):
    assert status_of(run, "loop").kind == "timeout"
    assert "AFTER LOOP" in output_of(run, "after_loop")


def test_plots_reach_the_executed_notebook_as_pictures(run):
    index = list(CELLS).index("plot")
    assert any("image/png" in out.get("data", {}) for out in run.executed.cells[index].outputs)


def test_peak_memory_is_measured(run):
    """Worker.run reads the peak from the worker's cgroup; without one (Sandbox.cgroup warns) there is none."""
    if run.cgroup is None:
        pytest.skip("the sandbox made no cgroup here (Cgroup.create needs root and writable memory and pids "
                    "controllers): limits are rlimits only and no peak is measured")
    if not run.peak_file:
        pytest.skip("cgroup v2 without memory.peak (Linux before 5.19): the kernel keeps no peak to read")
    peak = run.completed.peak_memory_bytes
    assert isinstance(peak, int) and peak > 100 * 2**20, peak


def test_only_the_scratch_folder_tmp_and_dev_shm_are_writable(planted):
    assert output_of(planted, "plant", LEAVE).splitlines()[:2] == [
        "NOT WRITABLE /dev Read-only file system", "NOT WRITABLE / Read-only file system"]


def test_nothing_carries_over_to_the_next_submission_in_a_worker(successor):
    first_line, left = output_of(successor, "look", LOOK).splitlines()
    assert "planted" not in first_line and "big" not in first_line, first_line
    layout = sorted([protocol.HOME_DIR, protocol.NOTEBOOK_DIR, protocol.PROBE_DIR, protocol.RUNNER_LOG])
    bound_in_tmp = sorted({Path(p).parts[2] for p in [*python_read_only_paths(), mnist_path()]
                           if Path(p).parts[:2] == ("/", "tmp") and len(Path(p).parts) > 2})  # a clone in /tmp
    assert first_line.startswith(f"[{layout}, {bound_in_tmp}, [], [") and first_line.endswith("] False False None")
    assert left == "LEFT 0"


def test_the_warm_worker_cannot_be_read_by_a_submission(successor):
    assert output_of(successor, "worker_memory", LOOK).strip() in ("DENIED 13", "DENIED 1")


def test_a_submission_that_kills_all_it_can_costs_only_itself(worker, successor):
    process = worker.process
    run_cells(worker, KILL_ALL)
    assert worker.process is process and worker.running  # its own PID namespace holds only its processes
    after = run_cells(worker, AFTER_KILL)
    assert output_of(after, "alive", AFTER_KILL).strip() == "GRADED 42"


def test_require_sandbox_refuses_without_bubblewrap(monkeypatch):
    from coursekit.grading import bubblewrap as sandbox

    monkeypatch.setattr(sandbox, "bubblewrap_works", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as root, the unprivileged fallback would take over
    with pytest.raises(sandbox.SandboxUnavailable):
        Sandbox([], require=True)
    with pytest.warns(UserWarning, match="WITHOUT isolation"):
        assert not Sandbox([], require=False).isolated



def test_no_sandbox_process_survives_a_failed_start(tmp_path, monkeypatch):
    """The grader fails after its workers started (here: no source notebook for the rubric)."""
    import shutil
    import tempfile

    import psutil

    from coursekit.config import Course
    from coursekit.grading.pipeline import Grader

    shutil.copytree(ROOT / "release", tmp_path / "release")
    monkeypatch.setattr(tempfile, "tempdir", str((tmp_path / "tmp").resolve()))
    (tmp_path / "tmp").mkdir()
    before = set(psutil.Process().children(recursive=True))  # the module's own worker may be running
    with pytest.raises(FileNotFoundError, match="source/classifier_from_scratch"):
        Grader(Course(tmp_path), require_sandbox=True, workers=2)
    assert set(psutil.Process().children(recursive=True)) <= before
    assert list((tmp_path / "tmp").iterdir()) == []


PREAMBLE = {
    "provided": "import os, torch\ntorch.set_grad_enabled(False)\nprovided = 41\nprint('RAN', os.urandom(8).hex())",
    "student": "print('STUDENT', provided + 1, torch.is_grad_enabled())",
}


def test_the_provided_cells_run_once_in_the_worker_and_each_kernel_starts_where_they_left_off(worker):
    """The snapshot of the leading provided cells: their output and namespace, and torch's grad mode,
    which is per thread (the worker ran them in its thread, the kernel runs cells in its own)."""
    runs = [execute(notebook_of(PREAMBLE), ROOT / "nonexistent", "nb.ipynb", worker, seed=0, probes=(),
                    no_autograd=False, preamble=(PREAMBLE["provided"],)) for _ in range(2)]
    printed = {output_of(run, "provided", PREAMBLE) for run in runs}
    assert len(printed) == 1 and printed.pop().startswith("RAN ")  # one run, in the worker
    for run in runs:
        assert output_of(run, "student", PREAMBLE) == "STUDENT 42 False\n"


def test_a_course_cloned_into_tmp_keeps_its_read_only_paths(tmp_path_factory):
    """Each submission gets a fresh /tmp; what the sandbox binds below /tmp (the environment of a clone in
    /tmp, pytest's folders) is bound back, read-only."""
    import tempfile

    shared = Path(tempfile.mkdtemp(dir="/tmp", prefix="coursekit-ro-"))
    (shared / "library.txt").write_text("FROM THE CLONE")
    sandbox = Sandbox([*python_read_only_paths(), mnist_path(), shared], require=True)
    limits = Limits(memory_bytes=3 * 2**30, cell_seconds=20, notebook_seconds=60, processes=64, output_bytes=10_000)
    worker = new_worker(sandbox, limits, mnist_path())
    cells = {
        "read": f"print(open({str(shared / 'library.txt')!r}).read())",
        "write": f"try:\n    open({str(shared / 'planted')!r}, 'w')\nexcept OSError as error:\n"
                 "    print('READONLY', error.errno)",
    }
    try:
        run = run_cells(worker, cells)
    finally:
        worker.close()
    assert output_of(run, "read", cells) == "FROM THE CLONE\n"
    assert output_of(run, "write", cells).startswith("READONLY")
