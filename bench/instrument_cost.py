"""Cost of the in-kernel instrumentation: the complete solution's cells in a plain Jupyter kernel,
without and with `instrument.py` installed first (as the sandbox's runner installs it: guard, loaders,
train followed), alternating, in one run; then, in the instrumented kernel, the provenance export
with its replay of the three graded models' training. Prints a Markdown table for the README.

    .venv/bin/python bench/instrument_cost.py [--runs 3]
"""
from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "submitted" / "alice_complete" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
GUARD = ROOT / "coursekit" / "in_sandbox" / "instrument.py"


def install_guard_cell() -> nbformat.NotebookNode:
    source = GUARD.read_text()
    return nbformat.v4.new_code_cell(
        f"import types\n__coursekit_guard = types.ModuleType('coursekit_guard')\n"
        f"exec(compile({source!r}, 'coursekit_guard', 'exec'), __coursekit_guard.__dict__)\n"
        "__coursekit_guard.install(True)")


REPLAY = """import time
class _Recorder:
    def __init__(self):
        self.meta = {}
    def value(self, key, tensor):
        pass
_rec, _start = _Recorder(), time.perf_counter()
__coursekit_guard.export_training(get_ipython().user_ns, ("regression_model", "logistic_model", "mlp_model"), _rec)
print(repr({"seconds": time.perf_counter() - _start,
            "differences": [m.get("replay_difference") for m in _rec.meta.values()]}))"""


def seconds_to_run(guarded: bool) -> tuple[float, dict]:
    """Wall time of the notebook's own cells (the kernel is started and warmed before timing); with
    the instrumentation, also the provenance export's seconds and replay differences."""
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
        seconds = time.perf_counter() - start
        if not guarded:
            return seconds, {}
        notebook.cells.append(nbformat.v4.new_code_cell(REPLAY))
        client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
        return seconds, ast.literal_eval(notebook.cells[-1].outputs[0]["text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    replays = []
    for _ in range(args.runs):
        for guarded in (False, True):
            seconds, replay = seconds_to_run(guarded)
            times[guarded].append(seconds)
            replays += [replay] if replay else []
            print(f"{'with' if guarded else 'without'} instrumentation: {seconds:.2f} s {replay}", file=sys.stderr)
    plain, guarded = statistics.median(times[False]), statistics.median(times[True])
    replay = statistics.median(r["seconds"] for r in replays)
    print("| complete solution's cells | seconds (median of {}) |\n|---|---|".format(args.runs))
    print(f"| without instrumentation | {plain:.2f} |\n| with instrumentation | {guarded:.2f} (ratio {guarded / plain:.3f}) |")
    print(f"| provenance export and replay, after the cells | {replay:.2f} ({replay / plain:.0%} of the cells) |")
    print(f"largest replay difference: {max(max(r['differences']) for r in replays):.3g}")


if __name__ == "__main__":
    main()
