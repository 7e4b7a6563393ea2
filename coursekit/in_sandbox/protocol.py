"""The contract between the host (`coursekit.grading`) and the code that runs inside the sandbox (this
folder, mounted read-only at CODE_MOUNT). Both sides import this module and nothing else of each
other, so it uses the standard library only.

One run: the host copies the submission into the scratch folder (SCRATCH_MOUNT inside the sandbox),
writes the probes' inputs, and sends a warm worker a `WorkerRequest` (carrying a `RunRequest` for the
runner). The runner executes the notebook; after each cell the guard in the student's kernel reports
a `GuardReport`; the probes leave their exports in the probe folder. The runner sends its `RunReport`
(a `RunLog`, with its `Status`es and records, and the executed notebook) through the report pipe
(REPORT_FD), which no student process ever holds, and the worker passes it on in its `WorkerAnswer`.

Every message is a dataclass with `to_json` (or `to_line`) and `from_json`, which keeps only the fields
of the right type and caps their sizes (the MAX_ constants below, used on both sides): what the runner
reports still came through the student's kernel, so the host reads it once, with `RunReport.from_text`,
like any other untrusted data, and then uses the typed records as they are.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

CODE_MOUNT = "/grader"          # this folder, read-only
SCRATCH_MOUNT = "/submission"   # the run's scratch folder, emptied before each submission
NOTEBOOK_DIR = "notebook"       # scratch: a copy of the submission's files and the sanitized notebook
PROBE_DIR = "probe"             # scratch: the probes' inputs and exports
HOME_DIR = "home"               # scratch: the run's home folder (fastai's config, matplotlib's cache)
RUNNER_LOG = "runner.log"       # scratch: the runner's own output (stderr), for the course staff
INPUTS_FILE = "inputs.safetensors"
WORKER_SCRIPT = "worker.py"
# executed as modules in the student's kernel
PROBES_FILE, GUARD_FILE, RECORD_FILE = "probes.py", "instrument.py", "training_record.py"
REPORT_FD = 3                   # the runner's end of the report pipe

PROBE_NAMES = ("names", "linear", "relu", "sequential", "log_softmax", "mse_loss",
               "cross_entropy_loss", "sgd_step", "train", "accuracy", "models", "provenance")
MAX_REPORT_BYTES = 64 * 2**20    # a runner's report (run log and executed notebook): the worker's pipe, the host
MAX_EXECUTED_CHARS = 20 * 2**20  # the executed notebook in a report; a bigger one is sent without its outputs
MAX_RUN_RECORDS = 1000           # of each kind of record (ForbiddenCall, ImportedData, RuntimeViolation) in a run log
MAX_GUARD_RECORDS = 100          # of each kind of record in the guard's report after one cell
MAX_STATUS_CHARS = 500           # a cell's or a probe's status, and why the probes stopped
MAX_API_CHARS = 100              # a record's API name
MAX_RULE_CHARS = 40              # a record's rule id
MAX_WITHIN, MAX_WITHIN_CHARS = 20, 60    # a forbidden call's enclosing functions: how many, and each name
MAX_FOUND, MAX_FOUND_CHARS = 20, 300     # autograd found in use after a cell: how many, and each description
# Training evidence: a batch row's fingerprint is the sum of its float32 bits (as int32) times whole-number
# weights below 2**FINGERPRINT_BITS drawn from a generator with this seed, for rows of at most
# FINGERPRINT_WIDTH values (training_record.py in the kernel and grading/retrain.py on the host agree). It is
# computed in float64, where it is exact: 31 + 10 + 12 bits of magnitude stay below float64's 53. Of a row
# wider than 2 * FINGERPRINT_COLUMNS, only every k-th value counts (k = width // FINGERPRINT_COLUMNS): the
# kernel fingerprints every step's batch during the student's training. 128 keeps all 70,000 MNIST images
# apart (tests/test_retrain.py checks the course's subset); the grader treats a fingerprint that distinct
# rows share as no known row (for review).
FINGERPRINT_SEED, FINGERPRINT_BITS, FINGERPRINT_WIDTH, FINGERPRINT_COLUMNS = 20261129, 10, 4096, 128
# The forbidden-API policy's rules: the run-time guard's id (instrument.py's FORBIDDEN tables, and the
# grader's messages for them in grading/policy.py) -> the static scanner's id for the same rule
# (grading/scan/findings.py). tests/test_policy_agreement.py checks that both sides use exactly these.
FORBIDDEN_API_RULES = {"autograd": "autograd", "torch-nn": "torch.nn", "torch-optim": "torch.optim",
                       "ready-made": "ready-made-function"}


@dataclass(frozen=True)
class RunRequest:
    """What the host asks the runner to do with the notebook in the scratch folder."""

    notebook: str                         # its file name in NOTEBOOK_DIR
    cell_seconds: int                     # the course's limits (config.py)
    notebook_seconds: int
    output_bytes: int                     # kept output per cell
    probes: tuple[str, ...] = PROBE_NAMES
    no_autograd: bool = True
    probe_seconds: int = 60
    scratch: str = SCRATCH_MOUNT          # where the runner finds the scratch folder

    def path(self, *parts: str) -> str:
        """A path in the scratch folder, as the runner sees it."""
        return "/".join((self.scratch, *parts))

    def to_argv(self) -> list[str]:
        return [
            self.notebook,
            "--scratch",
            self.scratch,
            "--probes",
            ",".join(self.probes),
            "--cell-seconds",
            str(self.cell_seconds),
            "--notebook-seconds",
            str(self.notebook_seconds),
            "--probe-seconds",
            str(self.probe_seconds),
            "--output-bytes",
            str(self.output_bytes),
            *([] if self.no_autograd else ["--allow-autograd"]),
        ]

    @classmethod
    def from_argv(cls, argv: list[str]) -> RunRequest:
        parser = argparse.ArgumentParser(prog="runner")
        parser.add_argument("notebook")
        parser.add_argument("--scratch", default=SCRATCH_MOUNT)
        parser.add_argument("--probes", default=",".join(PROBE_NAMES))
        parser.add_argument("--allow-autograd", dest="no_autograd", action="store_false")
        for option in ("cell-seconds", "notebook-seconds", "output-bytes"):
            parser.add_argument(f"--{option}", type=int, required=True)
        parser.add_argument("--probe-seconds", type=int, default=cls.probe_seconds)
        args = parser.parse_args(argv)
        probes = tuple(name for name in args.probes.split(",") if name)
        unknown = set(probes) - set(PROBE_NAMES)
        if unknown:
            parser.error(f"unknown probes: {sorted(unknown)}")
        return cls(args.notebook, args.cell_seconds, args.notebook_seconds, args.output_bytes, probes,
                   args.no_autograd, args.probe_seconds, args.scratch)


# Reading a message: every `from_json` takes what json.loads (or, for the guard's report, literal_eval) gave,
# keeps only the fields of the right type, caps their sizes, and drops a record whose identity is missing.
T = TypeVar("T")


def fields(data: object) -> dict:
    return data if isinstance(data, dict) else {}


def integer(value: object) -> int | None:
    """An int that is not a bool (JSON's true is no cell index)."""
    return value if type(value) is int else None


def capped(value: object, chars: int | None = None) -> str | None:
    return value[:chars] if isinstance(value, str) else None


def strings(value: object, count: int | None = None, chars: int | None = None) -> tuple[str, ...]:
    """The strings of a list (its first `count` items), each cut to `chars`."""
    items = value[:count] if isinstance(value, (list, tuple)) else ()
    return tuple(item[:chars] for item in items if isinstance(item, str))


def parsed(value: object, parse: Callable[[object], T | None], count: int) -> list[T]:
    """The records that parse among a list's first `count` items."""
    items = value[:count] if isinstance(value, (list, tuple)) else ()
    return [record for record in map(parse, items) if record is not None]


StatusKind = Literal["ok", "error", "timeout", "skipped", "died", "not-run"]
STATUS_KINDS: tuple[StatusKind, ...] = get_args(StatusKind)
SENTENCES: dict[StatusKind, str] = {"ok": "ok", "error": "error: {}", "timeout": "timeout: {}",
                                    "skipped": "skipped: {}", "died": "kernel died while running this cell",
                                    "not-run": "not run"}


@dataclass(frozen=True)
class Status:
    """How a code cell's or a probe's run ended: `kind` is what a program compares, `detail` the
    particulars (an error's name and message, the time limit); `sentence()` says it in words."""

    kind: StatusKind
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def sentence(self) -> str:
        return SENTENCES[self.kind].format(self.detail)[:MAX_STATUS_CHARS]

    def to_json(self) -> dict:
        return {"kind": self.kind, "detail": self.detail}

    @classmethod
    def from_json(cls, data: object) -> Status | None:
        data = fields(data)
        kind = next((kind for kind in STATUS_KINDS if kind == data.get("kind")), None)
        detail = capped(data.get("detail", ""), MAX_STATUS_CHARS)
        return None if kind is None or detail is None else cls(kind, detail)


OK = Status("ok")


@dataclass(frozen=True)
class ForbiddenCall:
    """A call into a forbidden API that the student's code made, as the run-time guard recorded it."""

    cell: int          # the code cell whose code made it (code made at run time: the cell that was running)
    line: int | None   # the line in that cell
    api: str
    dynamic: bool      # made by code created at run time (exec, eval...)
    rule: str          # the guard's rule id: a key of FORBIDDEN_API_RULES
    within: tuple[str, ...] = ()  # the student's functions and classes on the stack, innermost last

    def to_json(self) -> dict:
        return {"cell": self.cell, "line": self.line, "api": self.api, "dynamic": self.dynamic, "rule": self.rule,
                "within": list(self.within)}

    @classmethod
    def from_json(cls, data: object) -> ForbiddenCall | None:
        data = fields(data)
        cell, api, rule = integer(data.get("cell")), capped(data.get("api"), MAX_API_CHARS), data.get("rule")
        if cell is None or api is None or not isinstance(rule, str) or rule not in FORBIDDEN_API_RULES:
            return None
        return cls(cell, integer(data.get("line")), api, data.get("dynamic") is True, rule,
                   strings(data.get("within"), MAX_WITHIN, MAX_WITHIN_CHARS))


@dataclass(frozen=True)
class ImportedData:
    """Data that the student's code deserialised (torch.load, pickle, numpy.load...), for a person to review."""

    cell: int
    line: int | None
    api: str
    dynamic: bool

    def to_json(self) -> dict:
        return {"cell": self.cell, "line": self.line, "api": self.api, "dynamic": self.dynamic}

    @classmethod
    def from_json(cls, data: object) -> ImportedData | None:
        data = fields(data)
        cell, api = integer(data.get("cell")), capped(data.get("api"), MAX_API_CHARS)
        if cell is None or api is None:
            return None
        return cls(cell, integer(data.get("line")), api, data.get("dynamic") is True)


@dataclass(frozen=True)
class RuntimeViolation:
    """Autograd found in use after a cell ran (under the no-autograd policy): what, in words."""

    cell: int
    found: tuple[str, ...]

    def to_json(self) -> dict:
        return {"cell": self.cell, "found": list(self.found)}

    @classmethod
    def from_json(cls, data: object) -> RuntimeViolation | None:
        data = fields(data)
        cell = integer(data.get("cell"))
        return None if cell is None else cls(cell, strings(data.get("found"), MAX_FOUND, MAX_FOUND_CHARS))


@dataclass(frozen=True)
class GuardRecord:
    """One record of the guard's report, as the kernel made it (instrument.py): a forbidden call
    (`rule`, `within`) or a deserialiser's (neither), where the kernel saw it."""

    execution: int | None  # the execution count of the cell whose code it was (None: code made at run time)
    running: int | None    # the execution count of the cell that was running
    dynamic: bool
    line: int | None
    api: str
    rule: str = ""
    within: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"execution": self.execution, "running": self.running, "dynamic": self.dynamic, "line": self.line,
                "api": self.api, "rule": self.rule, "within": list(self.within)}

    @classmethod
    def from_json(cls, data: object) -> GuardRecord | None:
        data = fields(data)
        api = capped(data.get("api"), MAX_API_CHARS)
        if api is None:
            return None
        return cls(integer(data.get("execution")), integer(data.get("running")), data.get("dynamic") is True,
                   integer(data.get("line")), api, capped(data.get("rule"), MAX_RULE_CHARS) or "",
                   strings(data.get("within"), MAX_WITHIN, MAX_WITHIN_CHARS))


@dataclass
class GuardReport:
    """What the guard reports after a cell (`after_cell` in instrument.py): its new records, whether it
    is still intact, and, under the no-autograd policy, autograd found in use. It is the student's
    kernel's answer: a report that does not parse says the guard is gone."""

    calls: list[GuardRecord] = field(default_factory=list)
    imports: list[GuardRecord] = field(default_factory=list)
    guard_active: bool = False
    autograd: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"calls": [r.to_json() for r in self.calls], "imports": [r.to_json() for r in self.imports],
                "guard_active": self.guard_active, "autograd": list(self.autograd)}

    @classmethod
    def from_json(cls, data: object) -> GuardReport:
        data = fields(data)
        return cls(parsed(data.get("calls"), GuardRecord.from_json, MAX_GUARD_RECORDS),
                   parsed(data.get("imports"), GuardRecord.from_json, MAX_GUARD_RECORDS),
                   data.get("guard_active") is True, strings(data.get("autograd"), MAX_FOUND, MAX_FOUND_CHARS))


@dataclass
class RunLog:
    """What happened in one run, as the runner saw it."""

    cells: dict[int, Status] = field(default_factory=dict)  # code cell index -> how its run ended
    notebook_timed_out: bool = False
    probes: dict[str, Status] = field(default_factory=dict)  # probe name (or "setup") -> how it ended
    aborted: str | None = None                              # why the probes stopped early
    replays: int = 0                                        # restarts after a cell left the kernel unusable
    runtime_violations: list[RuntimeViolation] = field(default_factory=list)
    forbidden_calls: list[ForbiddenCall] = field(default_factory=list)
    imported_data: list[ImportedData] = field(default_factory=list)
    guard_removed_at: int | None = None                     # the cell after which the guard was gone

    def to_json(self) -> dict:
        return {"cells": {str(index): status.to_json() for index, status in self.cells.items()},
                "notebook_timed_out": self.notebook_timed_out,
                "probes": {name: status.to_json() for name, status in self.probes.items()}, "aborted": self.aborted,
                "replays": self.replays, "runtime_violations": [r.to_json() for r in self.runtime_violations],
                "forbidden_calls": [r.to_json() for r in self.forbidden_calls],
                "imported_data": [r.to_json() for r in self.imported_data], "guard_removed_at": self.guard_removed_at}

    @classmethod
    def from_json(cls, data: object) -> RunLog:
        """A RunLog from the report's JSON, keeping only what has the right type."""
        data = fields(data)
        return cls(
            cells=cell_statuses(data.get("cells")),
            notebook_timed_out=data.get("notebook_timed_out") is True,
            probes={name: status for name, value in fields(data.get("probes")).items()
                    for status in [Status.from_json(value)] if isinstance(name, str) and status is not None},
            aborted=capped(data.get("aborted"), MAX_STATUS_CHARS),
            replays=integer(data.get("replays")) or 0,
            runtime_violations=parsed(data.get("runtime_violations"), RuntimeViolation.from_json, MAX_RUN_RECORDS),
            forbidden_calls=parsed(data.get("forbidden_calls"), ForbiddenCall.from_json, MAX_RUN_RECORDS),
            imported_data=parsed(data.get("imported_data"), ImportedData.from_json, MAX_RUN_RECORDS),
            guard_removed_at=integer(data.get("guard_removed_at")),
        )

    def problems(self) -> list[tuple[int | None, str]]:
        """(cell index or None, what went wrong, in words), in notebook order."""
        found: list[tuple[int | None, str]] = [(index, status.sentence()) for index, status
                                               in sorted(self.cells.items()) if not status.ok]
        if self.notebook_timed_out:
            found.append((None, "the notebook reached its time limit; the remaining cells were skipped"))
        if self.aborted:
            found.append((None, f"grading stopped early: {self.aborted}"))
        return found


def cell_statuses(value: object) -> dict[int, Status]:
    """Cell index (a decimal string in JSON) -> status, for the entries that parse."""
    found = {}
    for key, data in fields(value).items():
        status = Status.from_json(data)
        if isinstance(key, str) and key.isascii() and key.isdigit() and status is not None:
            found[int(key)] = status
    return found


@dataclass
class RunReport:
    """The runner's report on the report pipe: the run log and the executed notebook (nbformat's
    JSON; None when there is none)."""

    log: RunLog = field(default_factory=RunLog)
    executed: str | None = None

    def to_json(self) -> dict:
        return {"log": self.log.to_json(), "executed": self.executed}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def from_json(cls, data: object) -> RunReport:
        data = fields(data)
        return cls(RunLog.from_json(data.get("log")), capped(data.get("executed")))

    @classmethod
    def from_text(cls, text: str) -> RunReport:
        """The report the worker passed on; an empty one when there was none, or it is too big or not JSON."""
        if not text or len(text) > MAX_REPORT_BYTES:
            return cls()
        try:
            return cls.from_json(json.loads(text))
        except (ValueError, RecursionError):
            return cls()


@dataclass(frozen=True)
class WorkerRequest:
    """A line the host sends a warm worker (worker.py): run the runner with `argv` (RunRequest.to_argv)
    in the environment `env`, with `threads` torch threads, its output going to the file `log`;
    `preamble`: the sources of the notebook's leading provided cells, which the worker runs once."""

    argv: tuple[str, ...]
    env: dict[str, str]
    threads: int
    log: str
    preamble: tuple[str, ...] = ()

    def to_line(self) -> bytes:
        message = {"argv": list(self.argv), "env": self.env, "threads": self.threads, "log": self.log,
                   "preamble": list(self.preamble)}
        return json.dumps(message).encode() + b"\n"

    @classmethod
    def from_line(cls, line: str | bytes) -> WorkerRequest:
        return cls.from_json(json.loads(line))

    @classmethod
    def from_json(cls, data: object) -> WorkerRequest:
        data = fields(data)
        env = {k: v for k, v in fields(data.get("env")).items() if isinstance(k, str) and isinstance(v, str)}
        return cls(strings(data.get("argv")), env, integer(data.get("threads")) or 1, capped(data.get("log")) or "",
                   strings(data.get("preamble")))


@dataclass(frozen=True)
class WorkerAnswer:
    """A line a worker sends the host: `ready` once it has imported its libraries, then for each
    request the runner's exit status and its report (RunReport's JSON; empty when it sent none)."""

    ready: bool = False
    returncode: int = -1
    report: str = ""

    def to_line(self) -> bytes:
        message = {"ready": self.ready, "returncode": self.returncode, "report": self.report}
        return json.dumps(message).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerAnswer | None:
        """The answer on a line; None for no line or one that is not an answer."""
        try:
            data = json.loads(line) if line else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        returncode = integer(data.get("returncode"))
        return cls(data.get("ready") is True, -1 if returncode is None else returncode,
                   capped(data.get("report")) or "")
