"""Execute step's isolation: warm workers in bubblewrap, with resource limits.

Inside: a read-only root, a read-only view of the system and the Python environment, the MNIST
folder read-only, and the writable scratch folder at /submission, emptied between submissions; each
submission also gets its own /tmp, /dev/shm and PID namespace from the worker (in_sandbox/worker.py).
No network, own PID namespace, no capabilities, dies with its parent. Memory and process
limits come from a cgroup where one can be made (root on cgroup v1 or v2), else from rlimits;
wall time from a timeout.
"""
from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from coursekit.config import Limits
from coursekit.grading.unprivileged import (
    BUBBLEWRAP,
    UNPRIVILEGED,
    UnprivilegedUser,
    isolation_for,
    network_filter_works,
)
from coursekit.in_sandbox.protocol import (
    CODE_MOUNT,
    RUNNER_LOG,
    SCRATCH_MOUNT,
    WORKER_SCRIPT,
    RunRequest,
    WorkerAnswer,
    WorkerRequest,
)


@dataclass
class Completed:
    returncode: int
    seconds: float
    timed_out: bool
    peak_memory_bytes: int | None
    out_of_memory: bool
    log: str          # the runner's own output (stderr), for the course staff
    report: str = ""  # the runner's report (a RunReport's JSON), from the worker: out of the student's reach


class SandboxUnavailable(RuntimeError):
    pass


def bubblewrap_works() -> bool:
    if not shutil.which("bwrap"):
        return False
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


class Cgroup:
    """A v1 or v2 cgroup for one worker, below the grader's own; None where it cannot be created."""

    def __init__(self, directories: dict[str, Path]):
        self.directories = directories

    @classmethod
    def create(cls, limits: Limits) -> Cgroup | None:
        name = f"coursekit-{uuid.uuid4().hex[:12]}"
        try:
            own = {
                line.split(":")[1]: line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
            }
            if "memory" in own and "pids" in own:
                directories = {c: Path("/sys/fs/cgroup", c, own[c].lstrip("/"), name) for c in ("memory", "pids")}
                for directory in directories.values():
                    directory.mkdir()
                (directories["pids"] / "pids.max").write_text(str(limits.processes))
            else:
                directory = Path("/sys/fs/cgroup", own.get("", "/").lstrip("/"), name)
                directory.mkdir()
                (directory / "memory.swap.max").write_text("0")
                (directory / "pids.max").write_text(str(limits.processes))
                directories = {"memory": directory, "pids": directory}
            cgroup = cls(directories)
            cgroup.limit_memory(limits.memory_bytes)
        except OSError:
            return None
        return cgroup

    @property
    def v1(self) -> bool:
        return self.directories["memory"] != self.directories["pids"]

    def memory_file(self, v1_name: str, v2_name: str) -> Path:
        return self.directories["memory"] / (v1_name if self.v1 else v2_name)

    def enter(self) -> None:
        """Called in the child before exec: move it into the cgroup."""
        for directory in set(self.directories.values()):
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def limit_memory(self, limit: int) -> None:
        self.memory_file("memory.limit_in_bytes", "memory.max").write_text(str(limit))

    def memory_used(self) -> int:
        return int(self.memory_file("memory.usage_in_bytes", "memory.current").read_text())

    def reset_peak(self) -> None:
        """Cgroup v1 only; on v2 the peak stays the worker's since it started."""
        if self.v1:
            self.memory_file("memory.max_usage_in_bytes", "").write_text("0")

    def peak_memory(self) -> int | None:
        path = self.memory_file("memory.max_usage_in_bytes", "memory.peak")
        return int(path.read_text()) if path.exists() else None

    def memory_limit_hits(self) -> int:
        if self.v1:
            return int(self.memory_file("memory.failcnt", "").read_text())
        events = dict(line.split() for line in self.memory_file("", "memory.events").read_text().splitlines())
        return int(events.get("oom_kill", 0))

    def remove(self) -> None:
        """Kill whatever is left in the cgroup, then remove it."""
        for directory in set(self.directories.values()):
            for _ in range(50):
                pids = (directory / "cgroup.procs").read_text().split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


class Sandbox:
    """The isolation every worker runs in: bubblewrap where it works, else (as root) a uid of its own per
    worker (unprivileged.py), else a loud warning."""

    def __init__(self, read_only: list[Path], require: bool = False):
        self.read_only = read_only
        self.warned_no_cgroup = False
        self.isolation = isolation_for(bubblewrap_works(), read_only)  # fallback hook (unprivileged.py)
        self.isolated = self.isolation == BUBBLEWRAP
        self.network_off = self.isolation == UNPRIVILEGED and network_filter_works()  # fallback hook
        if self.isolation not in (BUBBLEWRAP, UNPRIVILEGED):
            if require:
                raise SandboxUnavailable("bubblewrap (bwrap) is not installed or cannot create namespaces here, "
                                         "and --require-sandbox was given. Install Debian's `bubblewrap`.")
            warnings.warn("WARNING: bubblewrap is unavailable: student code will run WITHOUT isolation "
                          "(no network or filesystem sandbox), with rlimits only. Install `bubblewrap`.",
                          stacklevel=2)

    def command(self, binds: dict[str, Path], code_dir: Path, argv: list[str], env: dict[str, str]) -> list[str]:
        if not self.isolated:
            return argv
        wrap = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--unshare-user",
                "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL", "--clearenv",
                "--tmpfs", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"):
            if Path(path).exists():
                wrap += ["--ro-bind", path, path]
        for read_only in self.read_only:
            wrap += ["--ro-bind", str(read_only), str(read_only)]
        for inside, outside in binds.items():
            wrap += ["--bind", str(outside), inside]
        wrap += ["--ro-bind", str(code_dir), CODE_MOUNT, "--chdir", SCRATCH_MOUNT, "--remount-ro", "/"]
        for key, value in env.items():
            wrap += ["--setenv", key, value]
        return wrap + ["--"] + argv

    def account(self) -> UnprivilegedUser | None:
        """A worker's own uid in the fallback (unprivileged.py), else None."""
        return UnprivilegedUser.allocate(self.network_off) if self.isolation == UNPRIVILEGED else None

    def cgroup(self, limits: Limits) -> Cgroup | None:
        cgroup = Cgroup.create(limits)
        if cgroup is None and not self.warned_no_cgroup:
            self.warned_no_cgroup = True
            warnings.warn("no cgroup can be created here (not root?): memory and process limits are "
                          "per-process rlimits only", stacklevel=3)
        return cgroup


class WorkerFailed(RuntimeError):
    pass


class Worker:
    """One sandbox that runs submissions one after another (see coursekit/in_sandbox/worker.py).

    The libraries are imported once, when the worker starts; each submission then runs in a fresh
    fork, in a scratch folder that is emptied before it (`fresh_scratch`); the worker empties /tmp
    after it (without a sandbox, /tmp is a folder of the worker's, emptied here).
    The cgroup's memory limit is the submission's limit on top of what the warm worker uses.
    A submission that outlives its time limit costs the worker: it is killed and started again.
    """

    def __init__(self, sandbox: Sandbox, code_dir: Path, env: dict[str, str], limits: Limits, threads: int,
                 prepare_home: Callable[[Path], None]):
        self.sandbox, self.code_dir, self.env, self.limits, self.threads = sandbox, code_dir, env, limits, threads
        self.prepare_home = prepare_home
        self.folder = Path(tempfile.mkdtemp(prefix="coursekit-worker-"))
        self.scratch, self.tmp = self.folder / "submission", self.folder / "tmp"
        self.process: subprocess.Popen | None = None
        self.cgroup: Cgroup | None = None
        self.stopping = threading.Lock()
        self.account = sandbox.account()  # fallback hook: the worker's uid, its readable code, its IPYTHONDIR
        if self.account:
            self.code_dir, self.env = self.account.prepare(self.folder, code_dir, env)

    def inside(self, path: str) -> str:
        """A sandbox path as this worker's processes see it (the same path when isolated)."""
        if self.sandbox.isolated:
            return path
        for sandboxed, real in ((SCRATCH_MOUNT, self.scratch), (CODE_MOUNT, self.code_dir), ("/tmp", self.tmp)):
            if path == sandboxed or path.startswith(sandboxed + "/"):
                return str(real) + path[len(sandboxed):]
        return path

    def fresh_scratch(self) -> Path:
        """The scratch folder, empty but for the home folder, in a running worker."""
        if not self.running:
            self.start()
        self.clear()
        return self.scratch

    def clear(self) -> None:
        """Empty the scratch folder (it stays: it is the sandbox's mount point) and, without a sandbox,
        the stand-in for /tmp; put the home folder back."""
        for folder in (self.scratch, self.tmp):
            folder.mkdir(exist_ok=True)
            empty(folder)
        self.prepare_home(self.scratch)

    def start(self) -> None:
        self.launch()
        self.wait_until_ready()

    def launch(self) -> None:
        """Start the worker's process. Call this from a thread that outlives the worker: bubblewrap's
        --die-with-parent follows the thread that started it."""
        self.clear()
        self.cgroup = self.sandbox.cgroup(self.limits)
        limits, cgroup, account = self.limits, self.cgroup, self.account

        def limit_child():
            os.setsid()
            if cgroup:
                cgroup.enter()
            else:
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            # Per process, so one big allocation fails with a MemoryError instead of thrashing the cgroup.
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if account:  # fallback hook: last, once root's work is done
                account.enter()

        env = {key: self.inside(value) for key, value in self.env.items()}
        argv = [str(Path(sys.prefix).resolve() / "bin" / "python"), self.inside(f"{CODE_MOUNT}/{WORKER_SCRIPT}")]
        if self.sandbox.isolated:
            argv.append("--isolated")
        if self.account:  # fallback hook: the worker's sweep kills everything of its uid
            argv.append("--own-uid")
        binds = {SCRATCH_MOUNT: self.scratch}
        with open(self.folder / "worker.log", "wb") as log:
            self.process = subprocess.Popen(self.sandbox.command(binds, self.code_dir, argv, env),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            preexec_fn=limit_child, cwd=self.scratch,
                                            env=env if not self.sandbox.isolated else {"PATH": os.environ["PATH"]})

    def wait_until_ready(self) -> None:
        """Wait while the worker imports its libraries."""
        ready = self.answer(timeout=300)
        if ready is None or not ready.ready:
            raise WorkerFailed(f"the grading worker did not start:\n{self.stop()}")
        if self.cgroup:
            self.cgroup.limit_memory(self.limits.memory_bytes + self.cgroup.memory_used())

    def answer(self, timeout: float) -> WorkerAnswer | None:
        """The worker's next line, or None when it does not come in time (or the worker is gone)."""
        process = self.process  # another thread may stop the worker meanwhile
        if process is None or process.stdout is None:
            return None
        if not select.select([process.stdout], [], [], timeout)[0]:
            return None
        return WorkerAnswer.from_line(process.stdout.readline())

    def run(self, request: RunRequest, timeout: float, preamble: tuple[str, ...] = ()) -> Completed:
        """Run the sandboxed runner on what is in the scratch folder now; `preamble`: the sources of
        the notebook's leading provided cells, which the worker runs once for all its submissions."""
        if self.cgroup:
            self.cgroup.reset_peak()
        hits = self.cgroup.memory_limit_hits() if self.cgroup else 0
        if self.account:  # fallback hook: what the grader wrote for this run becomes the worker's uid's
            self.account.before_run(self.scratch, self.tmp)
        argv = replace(request, scratch=self.inside(SCRATCH_MOUNT)).to_argv()
        message = WorkerRequest(tuple(argv), {k: self.inside(v) for k, v in self.env.items()}, self.threads,
                                self.inside(f"{SCRATCH_MOUNT}/{RUNNER_LOG}"), preamble)
        start = time.monotonic()
        try:
            assert self.process and self.process.stdin, "the worker was not started (fresh_scratch starts it)"
            self.process.stdin.write(message.to_line())
            self.process.stdin.flush()
            answer = self.answer(timeout)
        except OSError:
            answer = None
        seconds = time.monotonic() - start
        peak = self.cgroup.peak_memory() if self.cgroup else None
        out_of_memory = self.cgroup is not None and self.cgroup.memory_limit_hits() > hits  # Cgroup has no __bool__
        if answer is None:  # too slow, or the worker itself died: start a fresh one next time
            self.stop()
        log_path = self.scratch / RUNNER_LOG
        log = log_path.read_bytes()[:20_000].decode("utf-8", "replace") if log_path.is_file() else ""
        if answer is None:
            return Completed(-1, seconds, seconds >= timeout, peak, out_of_memory, log)
        return Completed(answer.returncode, seconds, False, peak, out_of_memory, log, answer.report)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> str:
        """Stop the worker (safe to call from two threads at once); returns the end of its log."""
        with self.stopping:
            process, self.process = self.process, None
            cgroup, self.cgroup = self.cgroup, None
        if process:
            kill_group(process)
        if self.account:  # fallback hook: what the submission started outside the worker's group
            self.account.kill_all()
        if cgroup:
            cgroup.remove()
        log_path = self.folder / "worker.log"
        return log_path.read_bytes()[-5_000:].decode("utf-8", "replace") if log_path.is_file() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def empty(folder: Path) -> None:
    """Remove everything in folder, whatever permissions the submission gave it."""
    for directory, folders, _ in os.walk(folder):
        for name in folders:
            if not os.path.islink(os.path.join(directory, name)):
                os.chmod(os.path.join(directory, name), 0o700)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def python_read_only_paths() -> list[Path]:
    """What the sandboxed Python needs to see: the venv and the interpreter it was made from."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return sorted(paths)
