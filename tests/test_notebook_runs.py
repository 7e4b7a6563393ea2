"""The assignment notebook, executed in a kernel: the reference solution's cell time against a fixed workload
run in the same kernel (so a loaded machine does not fail the test), every number the reference answers
quote printed by a cell, the choosing rule the reference follows, and, for the reference and two other
honest settings taken from the notebook's own sweeps, no printed sentence that contradicts the printed
numbers."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, SOURCE, cell_by_id
from coursekit.config import Course
from coursekit.examples import build, replace
from coursekit.grading.rubric import nbgrader_meta

pytestmark = pytest.mark.slow

WORKLOAD = '''
import time
import torch


def fixed_workload(epochs=40):
    """A fixed amount of the notebook's typical work, one thread: minibatch steps of a 784-30-10 network.
    Returns the processor seconds it took."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4000, 784, generator=generator)
    W1, W2 = torch.randn(784, 30, generator=generator) * 0.05, torch.randn(30, 10, generator=generator) * 0.2
    start = time.process_time()
    with torch.no_grad():
        for _ in range(epochs):
            for first in range(0, len(x), 16):
                xb = x[first:first + 16]
                hidden = (xb @ W1).clamp(min=0)
                grad_out = (hidden @ W2).softmax(dim=1) / 16
                grad_hidden = (grad_out @ W2.T) * (hidden > 0)
                W2 -= 0.01 * hidden.T @ grad_out
                W1 -= 0.01 * xb.T @ grad_hidden
    torch.set_num_threads(threads)
    return time.process_time() - start
'''
BEFORE = WORKLOAD + 'print(f"WORKLOAD {fixed_workload():.4f}")\nprint(f"START {time.process_time():.4f}")'
AFTER = 'print(f"END {time.process_time():.4f}")\nprint(f"WORKLOAD {fixed_workload():.4f}")'
# The budget of issue 26: the reference's cells under 25 s on a quiet 2-core machine, where the second
# edition's took 16 s (issue 26). Processor time is what a quiet machine's wall time would be for this
# single-threaded work, and the workload, timed the same way in the same kernel, absorbs what a loaded
# machine still adds (shared caches, a slower clock): the second edition's cells took
# SECOND_EDITION_WORKLOADS workloads (`python tests/test_notebook_runs.py calibrate` on its source), so a
# notebook of R workloads takes about 16 * R / SECOND_EDITION_WORKLOADS s on the quiet machine.
SECOND_EDITION_WORKLOADS = 34.7  # 32.90 and 36.55 in two runs on the development machine, either side of this edition's
BUDGET_SECONDS = 25
ALTERNATIVES = {  # honest settings from the notebook's own sweeps: the smallest and the largest learning rates
    "smallest learning rates": {"regression": (0.001, 20, 32), "logistic": (0.01, 40, 32), "mlp": (0.05, 20, 16)},
    "largest learning rates": {"regression": (0.02, 20, 32), "logistic": (0.25, 40, 32), "mlp": (0.8, 20, 16)},
}
REFERENCE = {"regression": (0.005, 20, 32), "logistic": (0.05, 40, 32), "mlp": (0.2, 20, 16)}


def execute(notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, float, float]:
    """Run the notebook in a kernel with the fixed workload before and after it: (the executed notebook,
    the processor seconds of its cells, the workload's mean processor seconds)."""
    notebook = nbformat.from_dict(notebook)
    notebook.cells = [nbformat.v4.new_code_cell(BEFORE), *notebook.cells, nbformat.v4.new_code_cell(AFTER)]
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": str(SOURCE.parent)}},
    ).execute()
    first, last = text(notebook.cells[0]), text(notebook.cells[-1])
    workloads = [float(v) for v in re.findall(r"WORKLOAD (\S+)", first + last)]
    seconds = float(re.search(r"END (\S+)", last).group(1)) - float(re.search(r"START (\S+)", first).group(1))
    notebook.cells = notebook.cells[1:-1]
    return notebook, seconds, sum(workloads) / len(workloads)


def wall_seconds(notebook) -> float:
    return sum(cell_seconds(cell) for cell in notebook.cells if cell.cell_type == "code")


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = (
        datetime.fromisoformat(timing[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply")
    )
    return (end - start).total_seconds()


def text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.output_type == "stream")


def errors(cell) -> list[str]:
    return [f"{out.ename}: {out.evalue}" for out in cell.get("outputs", []) if out.output_type == "error"]


def with_settings(settings: dict) -> nbformat.NotebookNode:
    """The complete solution with other settings for the three models."""
    edits = [
        replace(
            name,
            f"{name}_settings = dict(lr={lr}, epochs={epochs}, batch_size={batch})",
            f"{name}_settings = dict(lr={new[0]}, epochs={new[1]}, batch_size={new[2]})",
        )
        for name, (lr, epochs, batch) in REFERENCE.items()
        for new in [settings[name]]
    ]
    return build(Course(ROOT), edits)


@pytest.fixture(scope="module")
def reference_run():
    start = time.perf_counter()
    executed, seconds, workload = execute(nbformat.read(SOURCE, as_version=4))
    print(
        f"\nreference: cells {seconds:.1f} processor s ({wall_seconds(executed):.1f} s of cell time), workload "
        f"{workload:.3f} s, ratio {seconds / workload:.2f}, "
        f"about {16 * seconds / workload / SECOND_EDITION_WORKLOADS:.1f} s "
        f"on the quiet machine; {time.perf_counter() - start:.0f} s in all"
    )
    return executed, seconds, workload


@pytest.fixture(scope="module", params=list(ALTERNATIVES))
def alternative_run(request):
    return execute(with_settings(ALTERNATIVES[request.param]))[0]


def test_the_reference_runs_without_error(reference_run):
    executed, _, _ = reference_run
    assert [(nbgrader_meta(c).get("grade_id"), errors(c)) for c in executed.cells if errors(c)] == []


def test_the_reference_cells_stay_within_the_budget_measured_against_a_fixed_workload(reference_run):
    _, seconds, workload = reference_run
    quiet = 16 * (seconds / workload) / SECOND_EDITION_WORKLOADS
    assert quiet < BUDGET_SECONDS, (
        f"{seconds:.1f} processor s of cells = {seconds / workload:.1f} workloads = {quiet:.1f} s quiet"
    )


DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def test_every_decimal_the_reference_answers_state_is_printed_by_a_cell(reference_run):
    executed, _, _ = reference_run
    printed = [float(v) for c in executed.cells if c.cell_type == "code" for v in DECIMAL.findall(text(c))]
    printed += [
        float(v) / 100 for c in executed.cells if c.cell_type == "code" for v in re.findall(r"(\d+\.\d+)%", text(c))
    ]
    for grade_id in ("regression_answer", "comparison_answer"):
        for number in DECIMAL.findall(cell_by_id(executed, grade_id).source):
            digits = len(number.split(".")[1])
            assert any(abs(round(value, digits) - float(number)) < 1e-9 for value in printed), (
                f"{grade_id} states {number}, which no cell prints"
            )


def test_the_reference_follows_the_rule_it_states(reference_run):
    executed, _, _ = reference_run
    for name, sweep in (("regression", "regression_sweep"), ("logistic", "logistic_sweep"), ("mlp", "mlp_sweep")):
        lr, epochs, batch = REFERENCE[name]
        assert f"The rule gives: lr = {lr}, {epochs} epochs, batches of {batch}" in text(cell_by_id(executed, sweep))
        assert (
            f"{name}_settings = dict(lr={lr}, epochs={epochs}, batch_size={batch})" in cell_by_id(executed, name).source
        )


# ---- what the printed sentences claim, recomputed from the numbers printed next to them


def check_sweep(output: str) -> None:
    rows = re.findall(
        r"lr = (\S+)\s+training loss.*?validation \w+ (\S+) after epoch (\d+), its best (\S+) after epoch (\d+)\n"
        r"\s+(.*?); spread of its last five scores (\S+)",
        output,
    )
    assert rows, output
    for lr, last, epochs, best, best_epoch, versus, spread in rows:
        tie = re.match(r"(a tie|worse): (\S+) from the best last score \(two standard errors: (\S+)\)", versus)
        assert versus == "the best last score" or (tie.group(1) == "a tie") == (
            float(tie.group(2)) <= float(tie.group(3))
        ), versus
    lr, epochs = re.search(r"The rule gives: lr = (\S+), (\d+) epochs", output).groups()
    candidates = [
        (float(spread) if spread != "inf" else math.inf, row_lr)
        for row_lr, *_, versus, spread in rows
        if versus == "the best last score" or versus.startswith("a tie")
    ]
    assert lr == min(candidates)[1], output
    chosen = next(row for row in rows if row[0] == lr)
    assert int(epochs) in (int(chosen[2]), int(chosen[4])), output


def check_regression_order(output: str) -> None:
    means = [float(v) for v in re.findall(r"\d: (-?\d+\.\d+)", output.split("\n")[0])]
    pairs = [(d, s) for d in range(10) for s in range(d) if means[d] < means[s]]
    stated = [
        (int(d), int(s)) for d, s in re.findall(r"the (\d)s are predicted lower on average than the (\d)s", output)
    ]
    assert stated == pairs and ("none:" in output) == (pairs == []), output


def check_start_loss(output: str) -> None:
    for loss, verdict in re.findall(r"loss at initialisation (\S+) .*?ln 10 = \S+\s+(ok|OUTSIDE)", output):
        assert (verdict == "ok") == (abs(float(loss) - math.log(10)) < 0.3), output


def check_overfit(output: str) -> None:
    accuracy = float(re.search(r"accuracy on them (\S+)", output).group(1))
    assert ("ok: the network can memorise" in output) == (accuracy == 1.0), output


def check_learning_rates(output: str) -> None:
    for losses, trend in re.findall(r"per epoch \[(.*?)\]: (.*)", output):
        values = [float(v) for v in losses.split(", ")]
        if not all(math.isfinite(v) for v in values):
            assert trend.startswith("diverged"), (losses, trend)
        elif values[-1] > values[0]:
            assert trend == "rose", (losses, trend)
        elif values[-1] > 0.9 * values[0]:
            assert trend.startswith("barely moved"), (losses, trend)
        else:
            assert trend.startswith("fell"), (losses, trend)
            percent = int(re.search(r"by (\d+)% in all", trend).group(1))
            assert abs(percent - 100 * (1 - values[-1] / values[0])) < 1.5, (losses, trend)


def check_mistakes(output: str) -> None:
    first, second = re.findall(r"of (?:the (\d+) most confident|all (\d+)) logistic mistakes", output)
    assert int(first[0]) <= 10 and int(second[1]) >= int(first[0]), output


PROSE = {
    "regression_sweep": check_sweep,
    "logistic_sweep": check_sweep,
    "mlp_sweep": check_sweep,
    "regression_means": check_regression_order,
    "logistic_start_loss": check_start_loss,
    "overfit_small": check_overfit,
    "learning_rates": check_learning_rates,
    "mlp_on_logistic_mistakes": check_mistakes,
}


def check_prose(executed) -> None:
    for grade_id, check in PROSE.items():
        check(text(cell_by_id(executed, grade_id)))


def test_no_printed_sentence_contradicts_the_printed_numbers_in_the_reference(reference_run):
    check_prose(reference_run[0])


def test_no_printed_sentence_contradicts_the_printed_numbers_with_other_honest_settings(alternative_run):
    check_prose(alternative_run)
    failures = {nbgrader_meta(c).get("grade_id"): errors(c) for c in alternative_run.cells if errors(c)}
    print(f"\nfailed model tests: {failures}")
    assert set(failures) <= {"test_regression", "test_logistic", "test_mlp"}, failures
    for grade_id, found in failures.items():
        assert all(
            error.startswith("AssertionError: the grader's floor") or "does not beat" in error for error in found
        ), found


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["calibrate"]:
        executed, seconds, workload = execute(nbformat.read(SOURCE, as_version=4))
        failed = [nbgrader_meta(c).get("grade_id") for c in executed.cells if errors(c)]
        print(
            f"{SOURCE}: cells {seconds:.2f} processor s ({wall_seconds(executed):.1f} s of cell time), "
            f"workload {workload:.4f} s: {seconds / workload:.2f} workloads; cells that failed: {failed}"
        )
