"""A warm worker: imports the notebook's heavy libraries once, then runs submissions one at a time,
each in a fresh fork of itself.

The grader starts this inside the sandbox and talks to it over stdin/stdout, one JSON line each way:
a request `{"argv": [...runner arguments...], "env": {...}, "threads": n, "log": path}` is answered
`{"returncode": n, "report": text}` once the forked runner has finished. The report (the run log and
the executed notebook) comes from the runner through a pipe that only the runner ever holds: its
kernels never inherit it, so no process of the student's can write to it or change what it said. The fork never comes back to this loop, so
what a submission does to its process cannot reach the next one, and after each run every process
it left behind is killed and /tmp emptied. This process is made non-dumpable: a submission runs as the same user but
cannot ptrace it or read its memory.

Like runner.py, it imports nothing from `coursekit` but `protocol`.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback

from protocol import REPORT_FD

PRELOAD = ("torch", "fastai.vision.all", "matplotlib.pyplot", "matplotlib_inline.backend_inline",
           "ipykernel.kernelapp", "ipykernel.ipkernel", "nbclient", "nbformat", "safetensors.torch")
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
MAX_REPORT_BYTES = 64 * 2**20


def preload() -> None:
    """Import what every notebook imports, so that forks start with it done (an import that fails
    here is left to fail in the student's kernel, with the student's traceback)."""
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            traceback.print_exc()


def run_submission(request: dict, report: int) -> None:
    """In the fork: become the runner for one submission, reporting on `report`; never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(report, REPORT_FD)
        os.closerange(REPORT_FD + 1, 4096)  # the answers pipe included: a submission cannot speak for the worker
        os.setsid()
        os.environ.clear()
        os.environ.update(request["env"])
        import torch
        torch.set_num_threads(int(request["threads"]))
        import runner
        runner.main(request["argv"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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


def clear_tmp() -> None:
    """Empty the sandbox's /tmp, leaving the sandbox's own mount points (a venv under /tmp) alone."""
    folders = []
    for directory, names, files in os.walk("/tmp"):
        for name in list(names):
            path = os.path.join(directory, name)
            if os.path.ismount(path):
                names.remove(name)
                continue
            if os.path.islink(path):
                names.remove(name)
                files.append(name)
                continue
            folders.append(path)
            try:
                os.chmod(path, 0o700)
            except OSError:
                pass
        for name in files:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
    for path in reversed(folders):
        try:
            os.rmdir(path)
        except OSError:  # holds a mount point
            pass


def main() -> None:
    isolated = "--isolated" in sys.argv[1:]
    own_uid = "--own-uid" in sys.argv[1:]  # the unprivileged fallback (coursekit/grading/unprivileged.py)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if own_uid:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    preload()
    answers = os.dup(1)
    os.dup2(2, 1)  # stray prints of this process go to its log, never into the answers
    os.write(answers, b'{"ready": true}\n')
    for line in sys.stdin:
        request = json.loads(line)
        pipe, report_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(pipe)
            run_submission(request, report_end)
        os.close(report_end)
        report, status = receive_report(pipe, pid)
        sweep(isolated, pid, own_uid)
        if isolated:
            clear_tmp()
        answer = {"returncode": os.waitstatus_to_exitcode(status), "report": report.decode("utf-8", "replace")}
        os.write(answers, json.dumps(answer).encode() + b"\n")


if __name__ == "__main__":
    main()
