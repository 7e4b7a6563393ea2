"""Cost of the in-kernel instrumentation and of trusted retraining: the complete solution's cells in a
plain Jupyter kernel, without and with `training_record.py` and `instrument.py` installed first (as the
sandbox's runner installs them: guard, loaders, threads, training record), alternating, in one run; then,
from the instrumented kernel's training record of the three graded models, the grader's trusted retraining on the host
(`grading/retrain.py`) with its time and its largest difference from the record. Prints a Markdown
table for the README. Besides wall time it reports the kernel's CPU time, which other programs on a shared
machine disturb less, and the median of the ratios of each pair (one run without, one with, back to back).

    .venv/bin/python bench/instrument_cost.py [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from coursekit.data import load_subset  # noqa: E402
from coursekit.grading.checks import LOGISTIC, MLP, REGRESSION, Context, already_trained  # noqa: E402
from coursekit.grading.probe_data import read_outputs  # noqa: E402
from coursekit.grading.retrain import RowIndex, read_record, verify  # noqa: E402
from coursekit.in_sandbox.protocol import FINGERPRINT_BITS, FINGERPRINT_COLUMNS, FINGERPRINT_SEED, FINGERPRINT_WIDTH, OK  # noqa: E402

NOTEBOOK = ROOT / "submitted" / "alice_complete" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
IN_SANDBOX = ROOT / "coursekit" / "in_sandbox"
MODELS = {"regression_model": REGRESSION, "logistic_model": LOGISTIC, "mlp_model": MLP}


def module_cell(name: str, path: Path, then: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(
        f"import types\n__{name} = types.ModuleType({name!r})\n"
        f"exec(compile({path.read_text()!r}, {name!r}, 'exec'), __{name}.__dict__)\n{then}")


def install_guard_cells() -> list[nbformat.NotebookNode]:
    """The training record and the guard, installed as the runner installs them."""
    return [module_cell("coursekit_record", IN_SANDBOX / "training_record.py",
                        f"__coursekit_record.install(get_ipython(), {FINGERPRINT_SEED}, {FINGERPRINT_BITS}, "
                        f"{FINGERPRINT_WIDTH}, {FINGERPRINT_COLUMNS})"),
            module_cell("coursekit_guard", IN_SANDBOX / "instrument.py",
                        "__coursekit_guard.install(True, __coursekit_record)")]


def export_cell(folder: str) -> nbformat.NotebookNode:
    """The provenance probe, as the runner calls it after the notebook (its inputs are not needed)."""
    return module_cell("coursekit_probe", IN_SANDBOX / "probes.py",
                       "rec = __coursekit_probe.Recorder()\n"
                       f"__coursekit_record.export_training(get_ipython().user_ns, {tuple(MODELS)!r}, rec)\n"
                       f"rec.save({folder!r}, 'provenance')")


def seconds_to_run(guarded: bool, folder: str) -> tuple[float, float]:
    """(wall, kernel CPU) seconds of the notebook's own cells (the kernel is started and warmed before
    timing); with the instrumentation, the training record is then exported into folder."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    warm_up = [nbformat.v4.new_code_cell("import torch, fastai.vision.all, matplotlib.pyplot\n"
                                         "torch.set_grad_enabled(False)")]
    notebook.cells = warm_up + (install_guard_cells() if guarded else []) + notebook.cells
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    prepared = 1 + guarded
    with client.setup_kernel():
        kernel = psutil.Process(client.km.provisioner.process.pid)  # type: ignore[union-attr]
        for index in range(prepared):
            client.execute_cell(notebook.cells[index], index)
        start, cpu = time.perf_counter(), sum(kernel.cpu_times()[:2])
        for index in range(prepared, len(notebook.cells)):
            client.execute_cell(notebook.cells[index], index)
        seconds, cpu = time.perf_counter() - start, sum(kernel.cpu_times()[:2]) - cpu
        if guarded:
            notebook.cells.append(export_cell(folder))
            client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
        return seconds, cpu


def retrain(folder: str, ctx: Context) -> tuple[float, float]:
    """(seconds, largest relative difference) of the trusted retraining of the three graded models."""
    output = read_outputs(Path(folder), {"provenance": OK})["provenance"]
    start, worst = time.perf_counter(), 0.0
    for name, architecture in MODELS.items():
        classifier = name != "regression_model"
        record = read_record(output, name, [shape for _, *shapes in architecture for shape in shapes])
        y = ctx.y_train if classifier else ctx.y_train.float()
        verdict = verify(record, ctx.rows, ctx.x_train, y, classifier,
                         lambda params: already_trained(ctx, params, classifier), None)
        assert verdict.outcome == "confirmed", (name, verdict)
        worst = max(worst, verdict.difference)
    return time.perf_counter() - start, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_subset()
    ctx = Context({}, {}, x_test, y_test, x_train, y_train, index=RowIndex(x_train, x_test))
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    retrained: list[tuple[float, float]] = []
    for _ in range(args.runs):
        for guarded in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                times[guarded].append(seconds_to_run(guarded, folder))
                retrained += [retrain(folder, ctx)] if guarded else []
            wall, cpu = times[guarded][-1]
            print(f"{'with' if guarded else 'without'} instrumentation: {wall:.2f} s, kernel CPU {cpu:.2f} s",
                  file=sys.stderr)
    report(times, retrained)


def report(times: dict[bool, list[tuple[float, float]]], retrained: list[tuple[float, float]]) -> None:
    runs = len(times[False])
    print(f"| complete solution's cells ({runs} pairs) | wall seconds (median) | kernel CPU seconds (median) |\n"
          "|---|---|---|")
    medians = {guarded: [statistics.median(run[kind] for run in times[guarded]) for kind in (0, 1)]
               for guarded in times}
    print(f"| without instrumentation | {medians[False][0]:.2f} | {medians[False][1]:.2f} |")
    print(f"| with instrumentation | {medians[True][0]:.2f} | {medians[True][1]:.2f} |")
    cells = []
    for kind in (0, 1):
        ratios = [guarded[kind] / plain[kind] for plain, guarded in zip(times[False], times[True])]
        cells.append(f"{statistics.median(ratios):.3f} ({', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"| ratio with / without, median of the pairs' (each pair's) | {cells[0]} | {cells[1]} |")
    seconds = statistics.median(s for s, _ in retrained)
    print(f"trusted retraining of the three graded models, on the host: {seconds:.2f} s (median); largest "
          f"difference between the record and its retraining: {max(d for _, d in retrained):.3g}")


if __name__ == "__main__":
    main()
