"""The fallback isolation where bubblewrap cannot start (unprivileged.py, no_network.py): a uid of its own
per worker, chosen only when it can work, and a network filter that refuses new internet sockets in every
thread. Fast: plain processes, no notebook (the Gradescope route's slow tests grade through it)."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coursekit.grading import no_network, unprivileged
from coursekit.grading.unprivileged import UnprivilegedUser

ROOT = Path(__file__).resolve().parent.parent
IN_SANDBOX = ROOT / "coursekit" / "in_sandbox"
# A Python any uid can run: the tests' own may sit in root's home (pyenv), where the fallback refuses it.
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the fallback switches uid: root only")


@pytest.fixture
def open_folder():
    """A folder every uid can pass through (pytest's own temp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="coursekit-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_filtered(code: str) -> subprocess.CompletedProcess:
    """`code` after no_network's filter, in a fresh interpreter that has only the module's source."""
    script = f"{Path(no_network.__file__).read_text()}\n{code}"
    return subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60)


def test_network_filter_refuses_internet_sockets_in_every_thread():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    run = run_filtered(f"""
import threading
start, done, outcomes = threading.Event(), threading.Event(), {{}}
def older_thread():  # started before the filter, as a kernel's own threads are
    start.wait()
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=5)
        outcomes["older thread"] = "connected"
    except PermissionError:
        outcomes["older thread"] = "refused"
    done.set()
threading.Thread(target=older_thread).start()
bound = socket.create_server(("127.0.0.1", 0))  # a kernel's own sockets, bound before the filter
block_network()
start.set(); done.wait()
for family in (socket.AF_INET, socket.AF_INET6):
    try:
        socket.socket(family)
        outcomes[family.name] = "created"
    except PermissionError:
        outcomes[family.name] = "refused"
socket.socketpair(); socket.socket(socket.AF_UNIX)
print(sorted(outcomes.items()), bound.getsockname()[1] > 0)
""")
    listener.settimeout(0.5)
    with pytest.raises(socket.timeout):
        listener.accept()
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[('AF_INET', 'refused'), ('AF_INET6', 'refused'), ('older thread', 'refused')] True"


def test_network_filter_reaches_the_processes_it_starts():
    run = run_filtered("block_network()\nimport subprocess, sys\n"
                       "sys.exit(subprocess.run([sys.executable, '-c', 'import socket; socket.socket()']).returncode)")
    assert run.returncode == 1 and "PermissionError" in run.stderr


def test_network_filter_works_here():
    assert unprivileged.network_filter_works()


def test_bubblewrap_comes_first_and_the_fallback_needs_root(monkeypatch):
    assert unprivileged.isolation_for(True, []) == "bubblewrap"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert unprivileged.isolation_for(False, []) == "none"


@as_root
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no Python every uid can run")
def test_the_fallback_needs_a_python_and_folders_its_uid_can_reach(open_folder):
    uid = unprivileged.free_uid()
    assert unprivileged.runs_as(uid, [open_folder], python=SYSTEM_PYTHON)
    private = open_folder / "private"
    private.mkdir(mode=0o700)
    assert not unprivileged.runs_as(uid, [private], python=SYSTEM_PYTHON)
    assert not unprivileged.runs_as(uid, [], python=str(open_folder / "no-python"))


@as_root
def test_a_free_uid_has_no_account_and_no_process():
    import pwd

    uid = unprivileged.free_uid()
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    assert unprivileged.processes_of(uid) == [] and os.getpid() in unprivileged.processes_of(os.getuid())


@as_root
def test_prepare_gives_the_uid_a_readable_code_copy_and_an_ipython_folder_it_cannot_change(open_folder):
    account = UnprivilegedUser(unprivileged.free_uid(), network_off=True)
    worker = open_folder / "worker"
    worker.mkdir(mode=0o700)
    code, env = account.prepare(worker, IN_SANDBOX, {"HOME": "/submission/home"})
    assert (code / "worker.py").read_bytes() == (IN_SANDBOX / "worker.py").read_bytes()
    assert stat.S_IMODE(worker.stat().st_mode) == 0o711 and stat.S_IMODE((code / "worker.py").stat().st_mode) == 0o644
    assert env == {"HOME": "/submission/home", "IPYTHONDIR": "/grader/.ipython"}  # a sandbox path, as all are
    scratch = worker / "submission"
    (scratch / "home" / ".fastai").mkdir(parents=True)
    (scratch / "home" / ".fastai" / "config.ini").write_text("archive = /submission/home/.fastai/archive\n")
    (scratch / "link").symlink_to("/etc/passwd")
    account.before_run(scratch)
    assert {p.lstat().st_uid for p in [scratch, *scratch.rglob("*")]} == {account.uid}
    assert Path("/etc/passwd").stat().st_uid == 0  # the link was changed, not its target
    assert (scratch / "home" / ".fastai" / "config.ini").read_text() == f"archive = {scratch}/home/.fastai/archive\n"
    startup = code / ".ipython" / "profile_default" / "startup"
    assert stat.S_IMODE((code / ".ipython").stat().st_mode) == 0o1777
    assert startup.stat().st_uid == 0 and stat.S_IMODE(startup.stat().st_mode) == 0o755
    assert "block_network()" in (startup / unprivileged.STARTUP_FILE).read_text()


@as_root
def test_before_run_removes_what_the_uid_left_in_shared_folders(open_folder, monkeypatch):
    account = UnprivilegedUser(unprivileged.free_uid(), network_off=False)
    shared = open_folder / "tmp"
    (shared / ".X11-unix").mkdir(parents=True)
    for folder in (shared, shared / ".X11-unix"):
        folder.chmod(0o1777)
    left = [shared / "left.txt", shared / "left-folder", shared / ".X11-unix" / "left"]
    left[0].write_text("answers of the last student")
    left[1].mkdir()
    left[2].write_text("x")
    for path in left:
        os.chown(path, account.uid, account.uid)
    (shared / "roots.txt").write_text("kept")
    monkeypatch.setattr(unprivileged, "SHARED_WRITABLE", (str(shared),))
    account.ipython = open_folder / "ipython"
    account.before_run()
    assert not any(path.exists() for path in left) and (shared / "roots.txt").exists()


@as_root
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no Python every uid can run")
def test_enter_drops_root_for_good():
    account = UnprivilegedUser(unprivileged.free_uid(), network_off=False)
    code = (
        "import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n"
        "    print(os.getuid(), os.getgid(), os.getgroups())"
    )
    run = subprocess.run([SYSTEM_PYTHON, "-I", "-c", code], preexec_fn=account.enter, cwd="/", capture_output=True,
                         text=True)
    assert run.stdout.split("\n")[0] == f"{account.uid} {account.uid} []", run.stderr


@as_root
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no Python every uid can run")
def test_the_workers_sweep_kills_every_process_of_its_uid_but_itself():
    """worker.py's sweep in the fallback: kill(-1) from the worker's uid, even for a process that left
    the run's session; the worker survives and reaps them (it is their subreaper)."""
    uid = unprivileged.free_uid()
    code = f"""
import ctypes, os, subprocess, sys
sys.path.insert(0, {str(IN_SANDBOX)!r})
import worker
ctypes.CDLL(None).prctl(worker.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
subprocess.Popen(["sleep", "60"])
subprocess.Popen(["setsid", "sh", "-c", "sleep 60 & sleep 60"])
import time; time.sleep(0.5)
worker.sweep(isolated=False, session=os.getpid(), own_uid=True)
print("swept")
"""
    run = subprocess.run([SYSTEM_PYTHON, "-I", "-c", code], user=uid, group=uid, extra_groups=[], cwd="/",
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "swept", run.stderr
    time.sleep(0.2)
    assert unprivileged.processes_of(uid) == []


@as_root
def test_kill_all_from_root():
    account = UnprivilegedUser(unprivileged.free_uid(), network_off=False)
    sleeper = subprocess.Popen(["sleep", "60"], user=account.uid, group=account.uid, extra_groups=[], cwd="/")
    assert unprivileged.processes_of(account.uid) == [sleeper.pid]
    account.kill_all()
    assert sleeper.wait(timeout=10) == -9 and unprivileged.processes_of(account.uid) == []


@as_root
def test_a_fallback_workers_kernels_find_the_network_filter():
    """The worker's environment names folders by their sandbox paths (Worker.inside maps them back): the
    IPython folder must come back to the prepared one, startup file included."""
    from coursekit.config import Limits
    from coursekit.grading.bubblewrap import Worker

    class FallbackSandbox:
        isolated = False

        def account(self):
            return UnprivilegedUser(unprivileged.free_uid(), network_off=True)

    worker = Worker(FallbackSandbox(), IN_SANDBOX, {"HOME": "/submission/home"}, Limits(), 1, lambda scratch: None)
    try:
        worker.account.reset_ipython()
        startup = Path(worker.inside(worker.env["IPYTHONDIR"])) / "profile_default" / "startup"
        assert (startup / unprivileged.STARTUP_FILE).is_file()
    finally:
        worker.close()
