"""The contract between the host (`coursekit.grading`) and the code that runs inside the sandbox (this
folder, mounted read-only at CODE_MOUNT). Both sides import this module and nothing else of each
other, so it uses the standard library only.

One run: the host copies the submission into the scratch folder (SCRATCH_MOUNT inside the sandbox),
writes the probes' inputs, and sends a warm worker a `RunRequest`. The runner executes the notebook,
runs the probes, which leave their exports in the probe folder, and sends back its report, a
`RunLog` and the executed notebook, through the report pipe (REPORT_FD), which no student process
ever holds. The host reads the report once, with `RunLog.parse`: it still came through the student's
kernel, so every field is checked like any other untrusted data.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

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
MAX_RECORDS = 1000              # of each kind of record in a run log
# Training evidence: a batch row's fingerprint is the sum of its float32 bits (as int32) times whole-number
# weights below 2**FINGERPRINT_BITS drawn from a generator with this seed, for rows of at most
# FINGERPRINT_WIDTH values (training_record.py in the kernel and grading/retrain.py on the host agree). It is
# computed in float64, where it is exact: 31 + 10 + 12 bits of magnitude stay below float64's 53.
FINGERPRINT_SEED, FINGERPRINT_BITS, FINGERPRINT_WIDTH = 20261129, 10, 4096
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


@dataclass
class RunLog:
    """What happened in one run, as the runner saw it."""

    cells: dict[int, str] = field(default_factory=dict)     # code cell index -> "ok", "error: ...", "timeout: ..."
    notebook_timed_out: bool = False
    probes: dict[str, str] = field(default_factory=dict)    # probe name (or "setup") -> "ok" or why not
    aborted: str | None = None                              # why the probes stopped early
    replays: int = 0                                        # restarts after a cell left the kernel unusable
    runtime_violations: list[dict] = field(default_factory=list)  # {"cell", "found"}: autograd in use after a cell
    forbidden_calls: list[dict] = field(default_factory=list)     # {"cell", "line", "api", "dynamic", "rule", "within"}
    imported_data: list[dict] = field(default_factory=list)       # {"cell", "line", "api", "dynamic"}
    guard_removed_at: int | None = None                     # the cell after which the guard was gone

    def to_json(self) -> dict:
        data = asdict(self)
        data["cells"] = {str(index): status for index, status in self.cells.items()}
        return data

    @classmethod
    def parse(cls, data: object) -> RunLog:
        """A RunLog from the report's JSON, keeping only what has the right type."""
        data = data if isinstance(data, dict) else {}
        cells, probes = data.get("cells"), data.get("probes")
        cells = cells if isinstance(cells, dict) else {}
        probes = probes if isinstance(probes, dict) else {}
        return cls(
            cells={
                int(k): v[:500] for k, v in cells.items() if isinstance(k, str) and k.isdigit() and isinstance(v, str)
            },
            notebook_timed_out=data.get("notebook_timed_out") is True,
            probes={k: v[:500] for k, v in probes.items() if isinstance(k, str) and isinstance(v, str)},
            aborted=data["aborted"][:500] if isinstance(data.get("aborted"), str) else None,
            replays=data["replays"] if type(data.get("replays")) is int else 0,
            runtime_violations=records(data.get("runtime_violations")),
            forbidden_calls=records(data.get("forbidden_calls")),
            imported_data=records(data.get("imported_data")),
            guard_removed_at=data["guard_removed_at"] if type(data.get("guard_removed_at")) is int else None,
        )

    def problems(self) -> list[tuple[int | None, str]]:
        """(cell index or None, what went wrong), in notebook order."""
        found: list[tuple[int | None, str]] = [(index, status) for index, status in sorted(self.cells.items())
                                               if status != "ok"]
        if self.notebook_timed_out:
            found.append((None, "the notebook reached its time limit; the remaining cells were skipped"))
        if self.aborted:
            found.append((None, f"grading stopped early: {self.aborted}"))
        return found


def records(value: object) -> list[dict]:
    """The dicts of a list from the report (at most MAX_RECORDS)."""
    return [item for item in value[:MAX_RECORDS] if isinstance(item, dict)] if isinstance(value, list) else []
