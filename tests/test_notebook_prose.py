"""What the released notebook says before it runs: no number that only our run produced, no reference
setting for the student to recognise instead of choosing. (What it prints when it runs is checked, for the
reference and two other honest settings, in test_notebook_runs.py.)"""

from __future__ import annotations

import math
import re

import nbformat
import pytest

from conftest import RELEASE, SOURCE, cell_by_id
from coursekit.grading.rubric import nbgrader_meta

DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
SECTIONS = {f"1.{i}" for i in range(1, 10)} | {"6.6"}  # this notebook's sections, and the fundamentals' 6.6
CONSTANTS = {  # the decimals the prose may state: facts of the assignment, not of a run
    "2.303": "ln 10, the loss of a uniform guess over 10 classes",
    "0.3": "the tolerance of the start-loss check",
    "0.1": "chance accuracy over 10 classes",
    "0.01": "the one-hot control's fixed learning rate",
    "0.5": "the square root in He initialisation, (2 / n_in) ** 0.5",
    "0.90": "the two-layer model's floor",
}
SWEEPS = (
    "regression_sweep_md",
    "regression_sweep",
    "logistic_md",
    "logistic_sweep",
    "mlp_sweep",
)  # and what describes them


@pytest.fixture(scope="module")
def release():
    return nbformat.read(RELEASE, as_version=4)


def test_the_prose_states_no_number_of_a_particular_run(release):
    stated = {
        (nbgrader_meta(cell).get("grade_id"), number)
        for cell in release.cells
        if cell.cell_type == "markdown"
        for sentence in re.split(r"(?<=[.?!])\s", cell.source)
        if "in our run" not in sentence
        for number in DECIMAL.findall(sentence)
        if number not in SECTIONS | set(CONSTANTS)
    }
    assert stated == set(), "numbers that a cell should compute, or that should say 'in our run'"


def test_the_constants_it_may_state_are_what_they_claim():
    assert f"{math.log(10):.3f}" == "2.303" and set(CONSTANTS) >= {"2.303", "0.3", "0.1", "0.90"}


def reference_settings(source) -> dict[str, dict[str, str]]:
    found = {}
    for name in ("regression", "logistic", "mlp"):
        match = re.search(
            rf"{name}_settings = dict\(lr=(\S+), epochs=(\d+), batch_size=(\d+)\)", cell_by_id(source, name).source
        )
        found[name] = dict(zip(("lr", "epochs", "batch_size"), match.groups()))
    return found


def test_no_provided_cell_gives_away_the_reference_settings(release):
    """Outside the sweeps (the grids the student chooses from), no cell the student cannot edit names a
    reference learning rate or epoch count as an argument: later cells take the student's own settings."""
    source = nbformat.read(SOURCE, as_version=4)
    locked = [
        cell
        for cell in release.cells
        if nbgrader_meta(cell).get("locked") and nbgrader_meta(cell).get("grade_id") not in SWEEPS
    ]
    for name, settings in reference_settings(source).items():
        for spelling in (
            f"lr={settings['lr']}",
            f"lr = {settings['lr']}",
            f"lr {settings['lr']}",
            f"epochs={settings['epochs']}",
            f"{settings['epochs']} epochs",
        ):
            naming = [nbgrader_meta(cell)["grade_id"] for cell in locked if spelling in cell.source]
            assert naming == [], f"{naming} name {name}'s reference {spelling}"


def test_the_two_layer_sweep_is_the_students_own(release):
    assert nbgrader_meta(cell_by_id(release, "mlp_sweep")).get("solution")
    assert "NotImplementedError" in cell_by_id(release, "mlp_sweep").source


SWEEP_OUTPUT = """lr = 0.01   training loss 1.860 -> 0.358   validation accuracy 0.8800 after epoch 40, its best 0.8800 after epoch 39
            worse: 0.0150 from the best last score (two standard errors: 0.0145); spread of its last five scores 0.0031
lr = 0.05   training loss 1.155 -> 0.238   validation accuracy 0.8890 after epoch 40, its best 0.8930 after epoch 38
            a tie: 0.0060 from the best last score (two standard errors: 0.0110); spread of its last five scores 0.0019
lr = 0.25   training loss 0.692 -> 0.145   validation accuracy 0.8950 after epoch 40, its best 0.9000 after epoch 33
            the best last score; spread of its last five scores 0.0035
The rule gives: lr = 0.05, 40 epochs, batches of 32
"""  # noqa: E501 (printed output, kept byte for byte)
MEANS_OUTPUT = """mean prediction per true digit: 0: 1.50  1: 2.40  2: 2.92  3: 3.78  4: 5.65  5: 4.56  6: 5.15  7: 6.74  8: 5.86  9: 6.86
out of order: the 5s are predicted lower on average than the 4s, the 6s are predicted lower on average than the 4s, the 8s are predicted lower on average than the 7s
"""  # noqa: E501 (printed output, kept byte for byte)
RATES_OUTPUT = """cross-entropy, lr = 0.0005: loss per epoch [2.398, 2.278, 2.179, 2.094, 2.019]: fell at every epoch, by 16% in all
regression, lr = 0.05 (10 times yours): MSE per epoch [nan, nan, nan]: diverged: not a number from epoch 1 on
"""  # noqa: E501 (printed output, kept byte for byte)


@pytest.mark.parametrize(
    "checker, output, old, new",
    [
        ("check_sweep", SWEEP_OUTPUT, "a tie: 0.0060", "worse: 0.0060"),
        ("check_sweep", SWEEP_OUTPUT, "The rule gives: lr = 0.05", "The rule gives: lr = 0.25"),
        ("check_sweep", SWEEP_OUTPUT, "0.05, 40 epochs", "0.05, 12 epochs"),
        (
            "check_regression_order",
            MEANS_OUTPUT,
            "the 8s are predicted lower on average than the 7s",
            "the 9s are predicted lower on average than the 7s",
        ),
        (
            "check_learning_rates",
            RATES_OUTPUT,
            "fell at every epoch, by 16% in all",
            "barely moved (down by less than 10 %)",
        ),
        ("check_learning_rates", RATES_OUTPUT, "diverged: not a number", "fell at every epoch, by 0% in all"),
    ],
)
def test_the_checks_of_printed_sentences_catch_a_contradiction(checker, output, old, new):
    """The slow runs' prose checks pass the reference's sentences and fail a sentence that contradicts them."""
    import test_notebook_runs

    check = getattr(test_notebook_runs, checker)
    check(output)
    with pytest.raises((AssertionError, AttributeError)):
        check(output.replace(old, new))
