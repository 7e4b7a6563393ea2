"""Execute step's isolation: run a command in bubblewrap with resource limits.

Inside: a read-only view of the system and the Python environment, the MNIST folder read-only,
and one writable folder (this submission's scratch copy) at /submission. No network, own PID
namespace, no capabilities, dies with its parent. Memory and process limits come from a cgroup
where one can be made (root on cgroup v1 or v2), else from rlimits; wall time from a timeout.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

SCRATCH = "/submission"
GRADER_CODE = "/grader"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 4 * 2**30
    notebook_seconds: int = 600
    cell_seconds: int = 120
    processes: int = 256
    file_bytes: int = 512 * 2**20
    output_bytes: int = 200_000


@dataclass
class Completed:
    returncode: int
    seconds: float
    timed_out: bool
    peak_memory_bytes: int | None
    out_of_memory: bool
    log: str


class SandboxUnavailable(RuntimeError):
    pass


def bubblewrap_works() -> bool:
    if not shutil.which("bwrap"):
        return False
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


class Cgroup:
    """A v1 or v2 cgroup for one run, below the grader's own; None where it cannot be created."""

    def __init__(self, directories: dict[str, Path]):
        self.directories = directories

    @classmethod
    def create(cls, limits: Limits) -> Cgroup | None:
        name = f"coursekit-{uuid.uuid4().hex[:12]}"
        try:
            own = {line.split(":")[1]: line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()}
            if "memory" in own and "pids" in own:
                directories = {c: Path("/sys/fs/cgroup", c, own[c].lstrip("/"), name) for c in ("memory", "pids")}
                for directory in directories.values():
                    directory.mkdir()
                (directories["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                (directories["pids"] / "pids.max").write_text(str(limits.processes))
            else:
                directory = Path("/sys/fs/cgroup", own.get("", "/").lstrip("/"), name)
                directory.mkdir()
                (directory / "memory.max").write_text(str(limits.memory_bytes))
                (directory / "memory.swap.max").write_text("0")
                (directory / "pids.max").write_text(str(limits.processes))
                directories = {"unified": directory}
        except OSError:
            return None
        return cls(directories)

    def enter(self) -> None:
        """Called in the child before exec: move it into the cgroup."""
        for directory in self.directories.values():
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def peak_memory(self) -> int | None:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            for directory in self.directories.values():
                if (directory / name).exists():
                    return int((directory / name).read_text())
        return None

    def out_of_memory(self) -> bool:
        for directory in self.directories.values():
            if (directory / "memory.failcnt").exists():
                return int((directory / "memory.failcnt").read_text()) > 0
            if (directory / "memory.events").exists():
                events = dict(line.split() for line in (directory / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0
        return False

    def remove(self) -> None:
        """Kill whatever is left in the cgroup (a fork that outlived the sandbox), then remove it."""
        for directory in self.directories.values():
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
        for directory in self.directories.values():
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


class Sandbox:
    """Runs the in-sandbox runner for one submission at a time (many Sandboxes may run at once)."""

    def __init__(self, read_only: list[Path], require: bool = False):
        self.read_only = read_only
        self.warned_no_cgroup = False
        self.isolated = bubblewrap_works()
        if not self.isolated:
            if require:
                raise SandboxUnavailable("bubblewrap (bwrap) is not installed or cannot create namespaces here, "
                                         "and --require-sandbox was given. Install Debian's `bubblewrap`.")
            warnings.warn("WARNING: bubblewrap is unavailable: student code will run WITHOUT isolation "
                          "(no network or filesystem sandbox), with rlimits only. Install `bubblewrap`.",
                          stacklevel=2)

    def command(self, scratch: Path, code_dir: Path, argv: list[str], env: dict[str, str]) -> list[str]:
        if not self.isolated:
            return argv
        wrap = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--unshare-user",
                "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL", "--clearenv",
                "--tmpfs", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"):
            if Path(path).exists():
                wrap += ["--ro-bind", path, path]
        for path in self.read_only:
            wrap += ["--ro-bind", str(path), str(path)]
        wrap += ["--bind", str(scratch), SCRATCH, "--ro-bind", str(code_dir), GRADER_CODE, "--chdir", SCRATCH]
        for key, value in env.items():
            wrap += ["--setenv", key, value]
        return wrap + ["--"] + argv

    def run(self, scratch: Path, code_dir: Path, argv: list[str], env: dict[str, str], limits: Limits,
            timeout: float) -> Completed:
        cgroup = Cgroup.create(limits)
        if cgroup is None and not self.warned_no_cgroup:
            self.warned_no_cgroup = True
            warnings.warn("no cgroup can be created here (not root?): memory and process limits are "
                          "per-process rlimits only", stacklevel=2)
        if not self.isolated:
            argv = [a.replace(SCRATCH, str(scratch)).replace(GRADER_CODE, str(code_dir)) for a in argv]
            env = {key: value.replace(SCRATCH, str(scratch)) for key, value in env.items()}

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

        log_path = scratch.parent / f"{scratch.name}.log"
        start = time.monotonic()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(self.command(scratch, code_dir, argv, env), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_child,
                                       cwd=scratch, env=env if not self.isolated else {"PATH": os.environ["PATH"]})
            timed_out = False
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                kill_group(process)
        seconds = time.monotonic() - start
        peak = cgroup.peak_memory() if cgroup else None
        out_of_memory = cgroup.out_of_memory() if cgroup else False
        if cgroup:
            cgroup.remove()
        with open(log_path, "rb") as log:
            text = log.read(20_000).decode("utf-8", "replace")
        log_path.unlink()
        return Completed(process.returncode, seconds, timed_out, peak, out_of_memory, text)


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
