"""Runs one sanitized notebook inside the sandbox, then probes the student's contract names.

It runs inside the sandbox and imports nothing from `coursekit` but `protocol`, its contract with
the host (both are in this folder, which is mounted into the sandbox). Its report (the run
log and the executed notebook) goes to the worker through a pipe that no kernel inherits, so nothing
the student's code starts can rewrite it; what the kernel told it, and the probes' exports, are still
the student's data, which the grader checks.

A kernel that dies or will not stop after a timeout is restarted and the notebook replayed
without the cells that killed it, so one bad cell costs only what depends on it.

Kernels are not started as new Python processes: they are forked from a spawner that this runner
forks first, before it runs anything of the student's, so every kernel (and every replay) starts with
the worker's libraries already imported and no state left by a previous kernel. When the worker has
run the notebook's leading provided cells already (its snapshot), every kernel starts with their
variables, and those cells are not run again: they get the output the worker recorded.
"""
from __future__ import annotations

import ast
import asyncio
import json
import os
import select
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

if TYPE_CHECKING:
    from jupyter_client.connect import KernelConnectionInfo

from protocol import (
    FINGERPRINT_BITS,
    FINGERPRINT_COLUMNS,
    FINGERPRINT_SEED,
    FINGERPRINT_WIDTH,
    GUARD_FILE,
    INPUTS_FILE,
    MAX_EXECUTED_CHARS,
    MAX_GUARD_RECORDS,
    MAX_STATUS_CHARS,
    NOTEBOOK_DIR,
    OK,
    PROBE_DIR,
    PROBES_FILE,
    RECORD_FILE,
    REPORT_FD,
    ForbiddenCall,
    GuardRecord,
    GuardReport,
    ImportedData,
    RunLog,
    RunReport,
    RunRequest,
    RuntimeViolation,
    Status,
)

MAX_REPLAYS = 3
GUARD_RESULT = "__coursekit_guard_result"
HERE = Path(__file__).resolve().parent


def module_setup(name: str, path: str, then: str = "") -> str:
    """Code that executes the file at path as a module `__name` of the kernel (its frames are named
    `name`, so the guard knows them for the grader's own)."""
    source = Path(path).read_text()
    return (f"import types as __t\n__{name} = __t.ModuleType({name!r})\n"
            f"exec(compile({source!r}, {name!r}, 'exec'), __{name}.__dict__)\ndel __t\n{then}")


def parse_report(text: str | None) -> GuardReport:
    """The guard's report, from the repr the kernel returned (a report that does not parse says the
    guard is gone)."""
    try:
        value = ast.literal_eval(text or "")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return GuardReport()
    return GuardReport.from_json(value)


class ForkedKernel:
    """The part of a Popen that jupyter_client uses, for a kernel forked by the spawner (not our child:
    its exit is watched through a pidfd, and its exit code is not known)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait(timeout=0)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], timeout)[0]:
            self.returncode = -1
            os.close(self.pidfd)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(3, "the kernel has exited")
        signal.pidfd_send_signal(self.pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class KernelSpawner:
    """A fork of the runner, made before any kernel exists, that forks a fresh kernel on request.
    It closes `private_fds` first, so that no kernel inherits them."""

    def __init__(self, private_fds: tuple[int, ...] = (), user_ns: dict | None = None):
        requests, self.requests = os.pipe()
        self.replies, replies = os.pipe()
        if os.fork() == 0:
            for fd in (self.requests, self.replies, *private_fds):
                os.close(fd)
            self.serve(requests, replies, user_ns)
        os.close(requests)
        os.close(replies)

    def spawn(self, connection_file: str, cwd: str) -> int:
        os.write(self.requests, json.dumps([connection_file, cwd]).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = os.read(self.replies, 64)
            if not chunk:
                raise RuntimeError("the kernel spawner has stopped")
            reply += chunk
        return int(reply)

    @staticmethod
    def serve(requests: int, replies: int, user_ns: dict | None) -> None:
        with os.fdopen(requests) as lines:
            for line in lines:
                connection_file, cwd = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.close(requests)
                    os.close(replies)
                    os.setpgid(0, 0)
                    os.chdir(cwd)
                    from ipykernel.kernelapp import IPKernelApp
                    IPKernelApp.launch_instance(argv=["-f", connection_file], user_ns=user_ns)
                    os._exit(0)
                try:
                    os.setpgid(pid, pid)
                except OSError:  # the kernel did it first, or has already exited
                    pass
                os.write(replies, f"{pid}\n".encode())
                reap_exited()
        os._exit(0)


def reap_exited() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


class ForkedProvisioner(LocalProvisioner):
    spawner: KernelSpawner

    async def launch_kernel(self, cmd: list[str], **kwargs) -> KernelConnectionInfo:
        assert self.parent is not None  # the kernel manager that owns this provisioner
        pid = self.spawner.spawn(self.parent.connection_file, str(kwargs.get("cwd") or os.getcwd()))
        self.process = ForkedKernel(pid)  # type: ignore[assignment]  # stands in for the Popen it would have
        self.pid = pid
        try:
            self.pgid = os.getpgid(pid)
        except OSError:
            self.pgid = None
        return self.connection_info


class ForkedKernelManager(AsyncKernelManager):
    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or str(uuid.uuid4())
            self.provisioner = ForkedProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        if not self.connection_file:  # else jupyter_client writes it to /tmp, which is the student's
            self.connection_file = os.path.join(os.path.expanduser("~"), f"kernel-{self.kernel_id}.json")
        return await super()._async_pre_start_kernel(**kw)


class CappedClient(NotebookClient):
    """A NotebookClient that keeps at most `max_output_bytes` of output per cell, so a cell that
    prints without end cannot exhaust the runner's memory."""

    max_output_bytes = 200_000
    truncated: set[int] = set()

    def output(self, outs, msg, display_id, cell_index):
        if cell_index in self.truncated:
            return None
        out = super().output(outs, msg, display_id, cell_index)
        if outs and sum(len(json.dumps(o)) for o in outs) > self.max_output_bytes:
            last = outs.pop()
            room = self.max_output_bytes - sum(len(json.dumps(o)) for o in outs)
            if last.get("output_type") == "stream" and room > 0:
                last["text"] = last["text"][:room]
                outs.append(last)
            outs.append(nbformat.v4.new_output(
                "stream", name="stdout", text=f"\n[output truncated by the grader at {self.max_output_bytes} bytes]\n"))
            self.truncated.add(cell_index)
        return out


class Runner:
    def __init__(self, request: RunRequest, snapshot=None):
        self.request = request
        self.notebook_path = request.path(NOTEBOOK_DIR, request.notebook)
        self.notebook = nbformat.read(self.notebook_path, as_version=4)
        self.deadline = time.monotonic() + request.notebook_seconds
        self.fatal_cells: set[int] = set()
        self.autograd_seen: set[str] = set()
        self.executions: dict[int, int] = {}  # the kernel's execution count -> cell index
        self.log = RunLog()
        self.ran_before = self.cells_in(snapshot)
        self.snapshot_grad = getattr(snapshot, "grad_enabled", True)

    def cells_in(self, snapshot) -> dict[int, str]:
        """Cell index -> recorded output, for the notebook's leading code cells that are the snapshot's
        (all of them, in order, or none)."""
        if snapshot is None:
            return {}
        code = [(index, cell) for index, cell in enumerate(self.notebook.cells) if cell.cell_type == "code"]
        leading = code[:len(snapshot.sources)]
        if [cell.source for _, cell in leading] != list(snapshot.sources):
            return {}
        return {index: printed for (index, _), printed in zip(leading, snapshot.outputs)}

    def new_client(self) -> CappedClient:
        client = CappedClient(self.notebook, kernel_name="python3", timeout=self.request.cell_seconds,
                              kernel_manager_class=ForkedKernelManager,
                              allow_errors=True, interrupt_on_timeout=False,
                              resources={"metadata": {"path": str(Path(self.notebook_path).parent)}})
        client.max_output_bytes = self.request.output_bytes
        client.truncated = set()
        return client

    async def silent(self, client, code: str, timeout: float, result_name: str | None = None):
        """Execute code without output; return ('ok'|'error'|'timeout', value of result_name)."""
        expressions = {"result": result_name} if result_name else {}
        msg_id = client.kc.execute(code, silent=True, store_history=False, user_expressions=expressions)
        end = time.monotonic() + timeout
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            try:
                reply = await client.kc.get_shell_msg(timeout=remaining)
            except Exception:  # queue.Empty on timeout
                return "timeout", None
            if reply["parent_header"].get("msg_id") != msg_id:
                continue
            content = reply["content"]
            if content.get("status") != "ok":
                return "error", f"{content.get('ename')}: {content.get('evalue')}"
            value = content.get("user_expressions", {}).get("result", {})
            return "ok", value.get("data", {}).get("text/plain")

    async def recover(self, client) -> bool:
        """After a timeout: interrupt, and tell whether the kernel answers again."""
        await client.km.interrupt_kernel()
        status, _ = await self.silent(client, "pass", timeout=5)
        return status == "ok"

    def instrumentation(self) -> str:
        """The code that prepares a fresh kernel: the inline plots, the training record, then the guard."""
        # The worker imported matplotlib's inline backend before this kernel's shell existed: enabling it
        # now registers the shell's PNG formatter, so plots reach the executed notebook as pictures.
        inline = "get_ipython().run_line_magic('matplotlib', 'inline')\n"
        install = (f"__coursekit_guard.MAX_RECORDS = {MAX_GUARD_RECORDS}\n"
                   f"__coursekit_record.install(get_ipython(), {FINGERPRINT_SEED}, {FINGERPRINT_BITS}, "
                   f"{FINGERPRINT_WIDTH}, {FINGERPRINT_COLUMNS})\n"
                   f"__coursekit_guard.install({self.request.no_autograd}, __coursekit_record)")
        if self.ran_before:  # the snapshot's cells set torch's grad mode in the worker's thread, not this one
            install = f"import torch\ntorch.set_grad_enabled({self.snapshot_grad})\n" + install
        setup = "".join(module_setup(name, HERE / file) for name, file in (("coursekit_record", RECORD_FILE),
                                                                            ("coursekit_guard", GUARD_FILE)))
        return inline + setup + install

    async def run_cells(self, client) -> int | None:
        """Run every code cell; return the index of a cell that left the kernel unusable, if any."""
        self.executions = {}
        await self.silent(client, self.instrumentation(), timeout=60)
        for index, cell in enumerate(self.notebook.cells):
            if cell.cell_type != "code" or index in self.fatal_cells:
                continue
            if index in self.ran_before:
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=self.ran_before[index])]
                self.log.cells[index] = OK
                continue
            if time.monotonic() > self.deadline:
                self.log.cells[index] = Status("skipped", "notebook time limit reached")
                self.log.notebook_timed_out = True
                continue
            client.timeout = max(1, min(self.request.cell_seconds, int(self.deadline - time.monotonic())))
            try:
                await client.async_execute_cell(cell, index)
            except CellTimeoutError:
                self.log.cells[index] = Status("timeout", f"stopped after {client.timeout} s")
                if not await self.recover(client):
                    return index
                continue
            except DeadKernelError:
                self.log.cells[index] = Status("died")
                return index
            errors = [out for out in cell.outputs if out.get("output_type") == "error"]
            error = f"{errors[0]['ename']}: {errors[0]['evalue']}"[:MAX_STATUS_CHARS] if errors else None
            self.log.cells[index] = OK if error is None else Status("error", error)
            execution = cell.get("execution_count") if isinstance(cell.get("execution_count"), int) else None
            if execution is not None:
                self.executions[execution] = index
            await self.collect_guard(client, index, execution)
        return None

    async def collect_guard(self, client, index: int, execution: int | None = None) -> None:
        """After cell `index` (run as `execution`; or after the probes): the instrumentation's records."""
        code = f"{GUARD_RESULT} = __coursekit_guard.after_cell({index}, {execution})"
        status, text = await self.silent(client, code, timeout=30, result_name=GUARD_RESULT)
        if status == "timeout":
            return
        report = parse_report(text) if status == "ok" else GuardReport()
        if not report.guard_active:
            if self.log.guard_removed_at is None:
                self.log.guard_removed_at = index
            return
        for call in report.calls:
            self.log.forbidden_calls.append(
                ForbiddenCall(self.cell_of(call, index), call.line, call.api, call.dynamic, call.rule, call.within))
        for load in report.imports:
            self.log.imported_data.append(ImportedData(self.cell_of(load, index), load.line, load.api, load.dynamic))
        new = tuple(item for item in report.autograd if item not in self.autograd_seen)
        if new:  # reported once, at the cell that brought it about
            self.autograd_seen.update(new)
            self.log.runtime_violations.append(RuntimeViolation(index, new))

    def cell_of(self, record: GuardRecord, index: int) -> int:
        """A record's cell index (code made at run time: the cell that was running), else `index`'s."""
        execution = record.running if record.dynamic else record.execution
        return self.executions.get(execution, index) if execution is not None else index

    async def run_probes(self, client) -> None:
        probe_dir = self.request.path(PROBE_DIR)
        for stale in Path(probe_dir).glob("*"):
            if stale.name != INPUTS_FILE and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        status, detail = await self.silent(client, module_setup("coursekit_probe", HERE / PROBES_FILE), timeout=60)
        if status != "ok":
            self.log.probes["setup"] = Status(status, f"{detail}"[:MAX_STATUS_CHARS])
            return
        for name in self.request.probes:
            code = f"__coursekit_probe.run({name!r}, {probe_dir!r}, {INPUTS_FILE!r}, {self.request.no_autograd})"
            status, detail = await self.silent(client, code, timeout=self.request.probe_seconds)
            self.log.probes[name] = OK if status == "ok" else Status(status, f"{detail}"[:MAX_STATUS_CHARS])
            if status == "timeout" and not await self.recover(client):
                self.log.aborted = f"the kernel stopped answering during probe {name}"
                return

    async def run(self) -> None:
        for attempt in range(MAX_REPLAYS + 1):
            client = self.new_client()
            async with client.async_setup_kernel():
                fatal = await self.run_cells(client)
                if fatal is None:
                    await self.run_probes(client)
                    await self.collect_guard(client, max(self.executions.values(), default=0))
                    return
            self.fatal_cells.add(fatal)
            self.log.replays = attempt + 1
            if time.monotonic() > self.deadline:
                break
        self.log.aborted = "the notebook left its kernel unusable too often"

    def report(self) -> bytes:
        """The run log and the executed notebook (without outputs if it is too big to keep)."""
        executed = nbformat.writes(self.notebook)
        if len(executed) > MAX_EXECUTED_CHARS:
            for cell in self.notebook.cells:
                if cell.cell_type == "code":
                    cell.outputs = []
            executed = nbformat.writes(self.notebook)
        return RunReport(self.log, executed).to_bytes()

    def send_report(self, fd: int) -> None:
        data = memoryview(self.report())
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)


def main(argv: list[str], snapshot=None) -> None:
    """Run the request in argv (`RunRequest.to_argv`), with the worker's snapshot of the leading
    provided cells if it has one; report on REPORT_FD, which the worker opened."""
    request = RunRequest.from_argv(argv)
    ForkedProvisioner.spawner = KernelSpawner(private_fds=(REPORT_FD,), user_ns=snapshot and snapshot.namespace)
    runner = Runner(request, snapshot)
    try:
        asyncio.run(runner.run())
    finally:
        runner.send_report(REPORT_FD)

