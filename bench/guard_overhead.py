"""Cost of the run-time guard: the complete solution's cells in a plain Jupyter kernel, without and
with the guard installed first (as the sandbox's runner installs it), alternating, in one run.
Prints seconds per run and the ratio for the README.

    .venv/bin/python bench/guard_overhead.py [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "submitted" / "alice_complete" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
GUARD = ROOT / "coursekit" / "sandbox" / "instrument.py"


def install_guard_cell() -> nbformat.NotebookNode:
    source = GUARD.read_text()
    return nbformat.v4.new_code_cell(
        f"import types\n__coursekit_guard = types.ModuleType('coursekit_guard')\n"
        f"exec(compile({source!r}, 'coursekit_guard', 'exec'), __coursekit_guard.__dict__)\n"
        "__coursekit_guard.install(True)")


def seconds_to_run(guarded: bool) -> float:
    """Wall time of the notebook's own cells (the kernel is started and warmed before timing)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    warm_up = [nbformat.v4.new_code_cell("import torch, fastai.vision.all, matplotlib.pyplot\n"
                                         "torch.set_grad_enabled(False)")]
    notebook.cells = warm_up + ([install_guard_cell()] if guarded else []) + notebook.cells
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    prepared = 1 + guarded
    with client.setup_kernel():
        for index in range(prepared):
            client.execute_cell(notebook.cells[index], index)
        start = time.perf_counter()
        for index in range(prepared, len(notebook.cells)):
            client.execute_cell(notebook.cells[index], index)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for guarded in (False, True):
            times[guarded].append(seconds_to_run(guarded))
            print(f"{'with' if guarded else 'without'} guard: {times[guarded][-1]:.2f} s", file=sys.stderr)
    plain, guarded = statistics.median(times[False]), statistics.median(times[True])
    print(f"| complete solution, cells only | without guard {plain:.2f} s | with guard {guarded:.2f} s "
          f"| ratio {guarded / plain:.3f} | median of {args.runs} alternating runs |")


if __name__ == "__main__":
    main()
