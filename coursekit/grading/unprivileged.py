"""Isolation where bubblewrap cannot start: each worker runs as a uid of its own.

In Gradescope's container, Docker's default seccomp profile refuses the namespaces bubblewrap needs, but
the autograder runs as root, so it can give student code a uid that owns nothing: it cannot read what
only root may (the autograder's files, made so by the platform route), cannot write the results, cannot
signal or trace the grader's processes (root's), and every process it starts can be found and killed by
that uid. Network: each kernel installs no_network.py's seccomp filter before any student code runs.
What this cannot do without namespaces: hide what any user may read (the system, the Python environment,
MNIST, the process list), keep the submission from killing its own worker, or limit memory beyond
rlimits where no cgroup can be made. `Sandbox` chooses this automatically when bubblewrap cannot start,
the grader is root and a fresh uid can run its Python and read what the sandbox would show.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from coursekit.grading import no_network
from coursekit.in_sandbox.protocol import CODE_MOUNT, HOME_DIR, SCRATCH_MOUNT

BUBBLEWRAP, UNPRIVILEGED, UNCONFINED = "bubblewrap", "unprivileged user", "none"
UIDS = range(40_000, 60_000)  # no account's, in any image: checked again when one is taken
PR_SET_NO_NEW_PRIVS = 38
STARTUP_FILE = "00-coursekit-no-network.py"
IPYTHON_DIR = ".ipython"  # in the worker's copy of the sandbox code
NO_NETWORK = Path(no_network.__file__)
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child must not dlopen


def isolation_for(bubblewrap_works: bool, needed: list[Path]) -> str:
    """What the grader's Sandbox uses: bubblewrap, else this fallback where the grader is root and a uid
    of nobody's can run this Python and read `needed` (not so when they sit in root's home), else nothing."""
    if bubblewrap_works:
        return BUBBLEWRAP
    return UNPRIVILEGED if os.geteuid() == 0 and runs_as(free_uid(), needed) else UNCONFINED


def runs_as(uid: int, needed: list[Path], python: str = sys.executable) -> bool:
    """Whether uid can start this Python and list each of the `needed` folders."""
    probe = "import os, sys\nfor path in sys.argv[1:]: os.listdir(path)"
    try:
        run = subprocess.run([python, "-I", "-c", probe, *map(str, needed)], user=uid, group=uid,
                             extra_groups=[], cwd="/", env={}, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return run.returncode == 0


def processes_of(uid: int) -> list[int]:
    """By real uid, from /proc/PID/status (a non-dumpable process's /proc folder belongs to root)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # gone meanwhile
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        if uids and int(uids[0]) == uid:
            found.append(int(entry))
    return found


def free_uid() -> int:
    """A uid no account has and no process uses (two graders on one machine must not share one)."""
    for uid in random.sample(UIDS, 50):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not processes_of(uid):
                return uid
    raise RuntimeError("no free uid for the unprivileged fallback")


def network_filter_works() -> bool:
    """Whether this kernel accepts no_network's filter (tried by a fresh interpreter, never by a fork of
    the grader, whose other threads may hold locks)."""
    check = f"{NO_NETWORK.read_text()}\nblock_network()\nsocket.socket(socket.AF_INET)\n"
    run = subprocess.run([sys.executable, "-I", "-c", check], capture_output=True, text=True)
    return run.returncode != 0 and "PermissionError" in run.stderr


@dataclass
class UnprivilegedUser:
    """One worker's uid (its gid is the same number), and whether its kernels get the network filter."""

    uid: int
    network_off: bool
    ipython: Path | None = None  # the worker's IPYTHONDIR, once prepared

    @classmethod
    def allocate(cls, network_off: bool) -> UnprivilegedUser:
        return cls(free_uid(), network_off)

    def prepare(self, folder: Path, code_dir: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
        """Make the worker's folder usable by this uid; returns the grader's sandbox code as a copy this
        uid can read (the original may sit under the autograder's private folder) and the environment
        with an IPython folder outside the run's scratch folder (see `reset_ipython`)."""
        folder.chmod(0o711)  # others may pass through, not list: worker.log stays the grader's
        code = folder / "grader"
        shutil.copytree(code_dir, code, ignore=shutil.ignore_patterns("__pycache__"))
        make_readable(code)
        # named by its sandbox path, as the worker's environment is (Worker.inside maps it back)
        self.ipython = code / IPYTHON_DIR
        return code, {**env, "IPYTHONDIR": f"{CODE_MOUNT}/{IPYTHON_DIR}"}

    def before_run(self, *folders: Path) -> None:
        """Give this uid what the grader wrote for the run (links are changed, never followed), and remove
        what an earlier submission of this uid left where this uid can write."""
        for folder in folders:
            map_sandbox_paths(folder)
            for path in [folder, *walk(folder)]:
                os.chown(path, self.uid, self.uid, follow_symlinks=False)
        for shared in SHARED_WRITABLE:
            remove_owned(Path(shared), self.uid)
        self.reset_ipython()

    def reset_ipython(self) -> None:
        """Root's folders with the sticky bit: IPython writes its history there, but this uid can neither
        move nor change root's startup folder, so a kernel started after a crash gets the filter too."""
        assert self.ipython, "prepare() first"
        shutil.rmtree(self.ipython, ignore_errors=True)
        startup = self.ipython / "profile_default" / "startup"
        startup.mkdir(parents=True)
        for sticky in (self.ipython, self.ipython / "profile_default"):
            sticky.chmod(0o1777)
        startup.chmod(0o755)
        if self.network_off:
            (startup / STARTUP_FILE).write_text(f"{NO_NETWORK.read_text()}\nblock_network()\n")
            (startup / STARTUP_FILE).chmod(0o644)

    def enter(self) -> None:
        """In the worker's process before it runs Python: become this uid for good."""
        os.setgroups([])
        os.setresgid(self.uid, self.uid, self.uid)
        os.setresuid(self.uid, self.uid, self.uid)
        if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")

    def kill_all(self) -> None:
        """From root: every process of this uid (when the worker itself is stopped)."""
        for _ in range(20):
            pids = processes_of(self.uid)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def map_sandbox_paths(scratch: Path) -> None:
    """fastai's config in the run's home folder names the home by its path inside bubblewrap (execute.py's
    home_folder); without bubblewrap that path does not exist, so name the scratch folder instead."""
    config = scratch / HOME_DIR / ".fastai" / "config.ini"
    if config.is_file():
        config.write_text(config.read_text().replace(f"{SCRATCH_MOUNT}/", f"{scratch}/"))


def walk(folder: Path) -> list[Path]:
    found = []
    for directory, folders, files in os.walk(folder):
        found += [Path(directory, name) for name in folders + files]
    return found


def remove_owned(folder: Path, uid: int) -> None:
    """What uid owns in a folder anyone may write to, and in such folders below it (/tmp/.X11-unix)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.lstat()
            if info.st_uid == uid:
                shutil.rmtree(entry) if stat.S_ISDIR(info.st_mode) else entry.unlink()
            elif stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH:
                remove_owned(entry, uid)
        except FileNotFoundError:  # removed meanwhile by its owner
            pass


def make_readable(folder: Path) -> None:
    for path in [folder, *walk(folder)]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            path.chmod(0o755 if stat.S_ISDIR(mode) else 0o644)
