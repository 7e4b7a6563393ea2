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
SWEEPS = ("regression_sweep_md", "regression_sweep", "logistic_md", "logistic_sweep", "mlp_sweep")  # and what describes them


@pytest.fixture(scope="module")
def release():
    return nbformat.read(RELEASE, as_version=4)


def test_the_prose_states_no_number_of_a_particular_run(release):
    stated = {(nbgrader_meta(cell).get("grade_id"), number) for cell in release.cells if cell.cell_type == "markdown"
              for sentence in re.split(r"(?<=[.?!])\s", cell.source) if "in our run" not in sentence
              for number in DECIMAL.findall(sentence) if number not in SECTIONS | set(CONSTANTS)}
    assert stated == set(), "numbers that a cell should compute, or that should say 'in our run'"


def test_the_constants_it_may_state_are_what_they_claim():
    assert f"{math.log(10):.3f}" == "2.303" and set(CONSTANTS) >= {"2.303", "0.3", "0.1", "0.90"}


def reference_settings(source) -> dict[str, dict[str, str]]:
    found = {}
    for name in ("regression", "logistic", "mlp"):
        match = re.search(rf"{name}_settings = dict\(lr=(\S+), epochs=(\d+), batch_size=(\d+)\)", cell_by_id(source, name).source)
        found[name] = dict(zip(("lr", "epochs", "batch_size"), match.groups()))
    return found


def test_no_provided_cell_gives_away_the_reference_settings(release):
    """Outside the sweeps (the grids the student chooses from), no cell the student cannot edit names a
    reference learning rate or epoch count as an argument: later cells take the student's own settings."""
    source = nbformat.read(SOURCE, as_version=4)
    locked = [cell for cell in release.cells if nbgrader_meta(cell).get("locked")
              and nbgrader_meta(cell).get("grade_id") not in SWEEPS]
    for name, settings in reference_settings(source).items():
        for spelling in (f"lr={settings['lr']}", f"lr = {settings['lr']}", f"lr {settings['lr']}",
                         f"epochs={settings['epochs']}", f"{settings['epochs']} epochs"):
            naming = [nbgrader_meta(cell)["grade_id"] for cell in locked if spelling in cell.source]
            assert naming == [], f"{naming} name {name}'s reference {spelling}"


def test_the_two_layer_sweep_is_the_students_own(release):
    assert nbgrader_meta(cell_by_id(release, "mlp_sweep")).get("solution")
    assert "NotImplementedError" in cell_by_id(release, "mlp_sweep").source
