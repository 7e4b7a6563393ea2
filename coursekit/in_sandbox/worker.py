"""A warm worker: imports the notebook's heavy libraries once, then runs submissions one at a time,
each in a fresh fork of itself, and (inside bubblewrap) in a sandbox of its own: new user, mount
and PID namespaces in which /tmp and /dev/shm are new empty tmpfs, /dev is read-only (the root
already is), and the runner is the namespace's init, so every process the submission started,
in whatever session, dies with it, and nothing it wrote outlives it.

The grader starts this inside the sandbox and talks to it over stdin/stdout, one JSON line each way: a
`protocol.WorkerRequest` (the runner's arguments, environment, threads, log file) is answered with a
`protocol.WorkerAnswer` (the runner's exit status and its report) once the forked runner has finished.
The report (`protocol.RunReport`: the run log and the executed notebook) comes from the runner through a
pipe that only the runner ever holds: its kernels never inherit it, so no process of the student's can
write to it or change what it said. The fork never comes back to this loop, so what a submission does to
its process cannot reach the next one, and after each run every process it left behind is killed and /tmp
emptied. This process is made non-dumpable: a submission runs as the same user but cannot
ptrace it or read its memory.

The notebook's leading provided cells (the data loading, identical for every student) run once,
in this process, before any fork: a request names them, and every kernel of every later submission
starts with their variables (a Snapshot), while the runner shows their recorded output.

Like runner.py, it imports nothing from `coursekit` but `protocol`.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import select
import signal
import sys
import time
import traceback

from protocol import MAX_REPORT_BYTES, REPORT_FD, WorkerAnswer, WorkerRequest

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, CAPABILITY_VERSION_3 = 24, 38, 0x20080522
LIBC = ctypes.CDLL(None, use_errno=True)
PRELOAD = ("torch", "fastai.vision.all", "matplotlib.pyplot", "matplotlib_inline.backend_inline",
           "ipykernel.kernelapp", "ipykernel.ipkernel", "nbclient", "nbformat", "safetensors.torch")
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def preload() -> None:
    """Import what every notebook imports, so that forks start with it done (an import that fails
    here is left to fail in the student's kernel, with the student's traceback)."""
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            traceback.print_exc()


class Snapshot:
    """The notebook's leading provided cells, run in this process: their sources, what they printed,
    and the namespace they left, which every kernel forked from here starts with."""

    def __init__(self, sources: tuple[str, ...]):
        self.sources = sources
        self.outputs: list[str] = []
        self.namespace: dict = {"__name__": "__main__"}
        self.grad_enabled = True  # torch's grad mode is per thread: each kernel sets it as the cells left it

    @classmethod
    def take(cls, sources: tuple[str, ...]) -> Snapshot | None:
        snapshot = cls(sources)
        try:
            for source in sources:
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(source, "<provided cell>", "exec"), snapshot.namespace)
                snapshot.outputs.append(printed.getvalue())
            torch = sys.modules.get("torch")
            snapshot.grad_enabled = torch is None or torch.is_grad_enabled()
        except Exception:  # every submission then runs these cells itself
            traceback.print_exc()
            return None
        return snapshot


def run_submission(request: WorkerRequest, report: int, isolated: bool, snapshot: Snapshot | None) -> None:
    """In the fork: become the runner for one submission, in a sandbox of its own when `isolated`,
    reporting on `report`; never returns."""
    code = 1
    try:
        if isolated:
            own_sandbox(report)
        log = os.open(request.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(report, REPORT_FD)
        os.closerange(REPORT_FD + 1, 4096)  # the answers pipe included: a submission cannot speak for the worker
        os.setsid()
        os.environ.clear()
        os.environ.update(request.env)
        import torch
        torch.set_num_threads(request.threads)
        import runner
        runner.main(list(request.argv), snapshot)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def checked(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def enter_namespaces(flags: int) -> None:
    """New namespaces for this process, keeping its user and group ids."""
    uid, gid = os.getuid(), os.getgid()
    checked(LIBC.unshare(flags), "unshare")
    with open("/proc/self/setgroups", "w") as setgroups:
        setgroups.write("deny")
    for name, value in (("uid_map", uid), ("gid_map", gid)):
        with open(f"/proc/self/{name}", "w") as mapping:
            mapping.write(f"{value} {value} 1")


def mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encoded = [value.encode() if value else None for value in (source, target, kind, data)]
    checked(LIBC.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]), f"mount {target}")


def drop_capabilities() -> None:
    """No capabilities at all, for good, in the namespaces the submission runs in."""
    for capability in range(64):
        LIBC.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    header, data = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0), (ctypes.c_uint32 * 6)()
    checked(LIBC.capset(header, data), "capset")
    checked(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def mounts_below(folder: str) -> list[str]:
    """The outermost mount points below folder (a course cloned into /tmp has its environment there)."""
    with open("/proc/self/mountinfo") as info:
        points = sorted({line.split()[4].encode().decode("unicode_escape") for line in info}, key=len)
    below = [point for point in points if point.startswith(folder + "/")]
    return [point for point in below if not any(point.startswith(outer + "/") for outer in below)]


def fresh_tmpfs(folder: str) -> None:
    """An empty tmpfs on folder, with the mounts that were below it bound back in their places (as they
    were: read-only stays read-only)."""
    kept = [(point, os.open(point, os.O_PATH)) for point in mounts_below(folder)]
    mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for point, fd in kept:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(point, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(point), exist_ok=True)
            open(point, "a").close()
        mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
        os.close(fd)


def own_sandbox(report: int) -> None:
    """Give the rest of this fork a sandbox of its own (see the module's doc). The second pair of
    namespaces locks the first one's mounts, so the submission cannot take them away; this process
    waits for the namespace's init and leaves with its exit status."""
    enter_namespaces(CLONE_NEWUSER | CLONE_NEWNS)
    for folder in ("/tmp", "/dev/shm"):
        fresh_tmpfs(folder)
    mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    enter_namespaces(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID)
    init = os.fork()
    if init:
        os.close(report)
        _, status = os.waitpid(init, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    drop_capabilities()


def receive_report(pipe: int, runner: int) -> tuple[bytes, int]:
    """Read the runner's report until the runner is gone; return it (empty if oversized) and the
    runner's wait status."""
    chunks, size, status = [], 0, None
    while True:
        if select.select([pipe], [], [], 0.5)[0]:
            chunk = os.read(pipe, 2**20)
            if not chunk:
                break
            size += len(chunk)
            if size <= MAX_REPORT_BYTES:
                chunks.append(chunk)
        elif status is None:
            exited, status = os.waitpid(runner, os.WNOHANG)
            status = status if exited else None
        else:  # the runner has exited and nothing more is coming
            break
    os.close(pipe)
    if status is None:
        _, status = os.waitpid(runner, 0)
    return (b"".join(chunks) if size <= MAX_REPORT_BYTES else b""), status


def sweep(isolated: bool, session: int, own_uid: bool = False) -> None:
    """Kill whatever the submission left running. In the sandbox's own PID namespace that is every
    process but this one and the namespace's init; in the unprivileged fallback, every process of this
    uid (kill(-1) spares the caller); without a sandbox, the run's session."""
    if own_uid:
        kill_own_uid()
        return
    if not isolated:
        try:
            os.killpg(session, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    keep = {1, os.getpid()}
    for _ in range(100):
        left = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.02)


def kill_own_uid() -> None:
    """The fallback's uid is this worker's alone; as a child subreaper it reaps what the kills leave."""
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:  # nothing left to signal
            return
        reap_children()
        time.sleep(0.02)


def reap_children() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return

def main() -> None:
    isolated = "--isolated" in sys.argv[1:]
    own_uid = "--own-uid" in sys.argv[1:]  # the unprivileged fallback (coursekit/grading/unprivileged.py)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if own_uid:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    preload()
    answers = os.dup(1)
    os.dup2(2, 1)  # stray prints of this process go to its log, never into the answers
    os.write(answers, WorkerAnswer(ready=True).to_line())
    snapshots: dict[tuple[str, ...], Snapshot | None] = {}
    for line in sys.stdin:
        request = WorkerRequest.from_line(line)
        preamble = request.preamble
        if preamble not in snapshots:
            snapshots[preamble] = Snapshot.take(preamble) if preamble else None
        pipe, report_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(pipe)
            run_submission(request, report_end, isolated, snapshots[preamble])
        os.close(report_end)
        report, status = receive_report(pipe, pid)
        sweep(isolated, pid, own_uid)
        answer = WorkerAnswer(returncode=os.waitstatus_to_exitcode(status), report=report.decode("utf-8", "replace"))
        os.write(answers, answer.to_line())


if __name__ == "__main__":
    main()
