"""Execute step: run a sanitized notebook in a sandboxed worker, in a scratch copy of the submission,
then collect the run log, the executed notebook and the probes' exports (see in_sandbox/protocol.py)."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

from coursekit.config import Limits
from coursekit.grading.bubblewrap import Completed, Sandbox, Worker
from coursekit.grading.probe_data import ProbeOutput, make_inputs, read_outputs, write_inputs
from coursekit.in_sandbox import protocol
from coursekit.in_sandbox.protocol import HOME_DIR, NOTEBOOK_DIR, PROBE_DIR, PROBE_NAMES, RunLog, RunReport, RunRequest

IN_SANDBOX = Path(protocol.__file__).resolve().parent
HOME = f"{protocol.SCRATCH_MOUNT}/{HOME_DIR}"
logger = logging.getLogger(__name__)
MAX_COPIED_BYTES = 50 * 2**20


@dataclass
class Execution:
    completed: Completed
    log: RunLog
    executed: nbformat.NotebookNode | None
    outputs: dict[str, ProbeOutput]
    inputs: dict
    notes: list[str] = field(default_factory=list)


def walk_files(folder: Path) -> list[Path]:
    """Every file and symlink below folder, without following symlinked folders."""
    found = []
    for directory, folders, files in os.walk(folder):
        found += [Path(directory, name) for name in files + [f for f in folders if Path(directory, f).is_symlink()]]
    return sorted(found)


def copy_submission(source: Path, destination: Path) -> list[str]:
    """Copy the submission's regular files (no symlinks, nothing too big) into the scratch folder."""
    notes, copied = [], 0
    destination.mkdir(parents=True)
    for path in walk_files(source):
        relative = path.relative_to(source)
        if path.is_symlink():
            notes.append(f"'{relative}' is a symbolic link; it was not copied into the sandbox")
        elif path.is_file() and path.stat().st_nlink > 1:
            notes.append(
                f"'{relative}' is a hard link to a file outside your submission; it was not copied into the sandbox"
            )
        elif path.is_file():
            copied += path.stat().st_size
            if copied > MAX_COPIED_BYTES:
                notes.append(
                    f"the submission is over {MAX_COPIED_BYTES // 2**20} MiB; '{relative}' and later files were not "
                    "copied"
                )
                break
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination / relative)
    return notes


def home_folder(mnist: Path, mpl_cache: Path | None) -> Callable[[Path], None]:
    """What every run's home folder holds: a fastai config whose data folder is the read-only MNIST
    parent, and matplotlib's font cache (built once, not in every sandbox)."""
    def prepare(scratch: Path) -> None:
        config = scratch / HOME_DIR / ".fastai"
        (config / "archive").mkdir(parents=True)
        (config / "config.ini").write_text(
            f"[DEFAULT]\ndata = {mnist.parent}\narchive = {HOME}/.fastai/archive\n"
            f"storage = {HOME}/.fastai/tmp\nmodel = {HOME}/.fastai/models\nversion = 2\n")
        if mpl_cache and mpl_cache.is_dir():
            shutil.copytree(mpl_cache, scratch / HOME_DIR / ".matplotlib")
    return prepare


def sandbox_env(threads: int) -> dict[str, str]:
    home = HOME
    return {
        "PATH": f"{Path(sys.prefix).resolve() / 'bin'}:/usr/bin:/bin",
        "HOME": home,
        "FASTAI_HOME": f"{home}/.fastai",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "IPYTHONDIR": f"{home}/.ipython",
        "JUPYTER_RUNTIME_DIR": f"{home}/.runtime",
        "JUPYTER_DATA_DIR": f"{home}/.jupyter",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def new_worker(sandbox: Sandbox, limits: Limits, mnist: Path, threads: int = 1,
               mpl_cache: Path | None = None) -> Worker:
    return Worker(sandbox, IN_SANDBOX, sandbox_env(threads), limits, threads, home_folder(mnist, mpl_cache))


def execute(notebook: nbformat.NotebookNode, submission_dir: Path, notebook_name: str, worker: Worker,
            seed: int, probes: tuple[str, ...] = PROBE_NAMES, no_autograd: bool = True,
            preamble: tuple[str, ...] = ()) -> Execution:
    limits = worker.limits
    scratch = worker.fresh_scratch()
    notes = copy_submission(submission_dir, scratch / NOTEBOOK_DIR)
    nbformat.write(notebook, scratch / NOTEBOOK_DIR / notebook_name)
    (scratch / PROBE_DIR).mkdir()
    inputs = make_inputs(seed)
    write_inputs(inputs, scratch / PROBE_DIR)
    request = RunRequest(notebook_name, probes=probes, no_autograd=no_autograd, cell_seconds=limits.cell_seconds,
                         notebook_seconds=limits.notebook_seconds, output_bytes=limits.output_bytes)
    completed = worker.run(request, timeout=limits.notebook_seconds + 120, preamble=preamble)
    log, executed = read_report(completed.report)
    if not completed.report or completed.returncode:
        logger.warning("the runner ended with status %s%s; its output ends with:\n%s", completed.returncode,
                       "" if completed.report else " and no report", completed.log[-2000:])
    outputs = read_outputs(scratch / PROBE_DIR, log.probes) if probes else {}
    return Execution(completed, log, executed, outputs, inputs, notes)


def read_report(report: str) -> tuple[RunLog, nbformat.NotebookNode | None]:
    """The run log and the executed notebook from the runner's report (the worker's trusted channel;
    empty when the runner was stopped before it reported). Its contents still came through the
    student's kernel, so each part is checked like any other untrusted data (`RunReport.from_text`)."""
    parsed = RunReport.from_text(report)
    try:
        executed = nbformat.reads(parsed.executed, as_version=4) if parsed.executed is not None else None
    except Exception:  # malformed: feedback without the notebook
        executed = None
    return parsed.log, executed
