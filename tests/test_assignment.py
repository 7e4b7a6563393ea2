"""The assignment notebook: its rubric, the generated release (up to date, nothing leaked), the
example submissions, and grading by nbgrader itself."""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from conftest import RELEASE, ROOT, SOURCE, cell_by_id
from coursekit.config import Course
from coursekit.examples import MALFORMED, write_examples
from coursekit.grading.checks import CHECKS
from coursekit.grading.rubric import load_rubric, nbgrader_meta

CONTRACT_TESTS = {"Linear": "test_linear", "ReLU": "test_relu", "Sequential": "test_sequential",
                  "log_softmax": "test_log_softmax", "MSELoss": "test_mse_loss",
                  "CrossEntropyLoss": "test_cross_entropy_loss", "sgd_step": "test_sgd_step", "train": "test_train",
                  "accuracy": "test_accuracy", "regression_model": "test_regression",
                  "logistic_model": "test_logistic", "mlp_model": "test_mlp"}


def test_points_add_up_to_a_round_total():
    rubric = load_rubric(SOURCE)
    assert rubric.total == 100
    assert sum(c.points for c in rubric.autograded) == 80 and sum(c.points for c in rubric.manual) == 20


def test_every_contract_name_has_hidden_tests_worth_points(source_notebook):
    cells = {nbgrader_meta(c).get("grade_id"): c for c in source_notebook.cells}
    for name, grade_id in CONTRACT_TESTS.items():
        cell = cells[grade_id]
        assert nbgrader_meta(cell)["points"] > 0 and name in cell.source
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{grade_id} has no hidden tests"


def test_every_autograded_cell_has_a_trusted_check():
    assert {c.grade_id for c in load_rubric(SOURCE).autograded} == set(CHECKS)


def test_notebook_is_organised_in_the_five_parts(source_notebook):
    headings = [line for c in source_notebook.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in headings[:6]] == [f"## Part {n}" for n in range(6)]


def solution_lines(notebook) -> set[str]:
    """Distinctive lines written inside solution regions (those not also given outside them)."""
    region = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
    provided = "\n".join(region.sub("", c.source) for c in notebook.cells)
    lines = set()
    for cell in notebook.cells:
        for answer in region.findall(cell.source):
            lines |= {line.strip() for line in answer.splitlines()
                      if len(line.strip()) > 15 and line.strip() not in provided}
    return lines


def test_release_leaks_no_solution_and_no_hidden_test(source_notebook):
    text = RELEASE.read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "_g = torch.Generator" not in text
    leaked = [line for line in solution_lines(source_notebook) if line in text]
    assert len(solution_lines(source_notebook)) > 50 and leaked == []


def course_copy(tmp_path: Path) -> Course:
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    return Course(tmp_path)


def test_release_is_up_to_date_with_source(tmp_path):
    course = course_copy(tmp_path)
    shutil.rmtree(tmp_path / "release")
    run = subprocess.run([sys.executable, "-m", "coursekit", "--root", str(tmp_path), "release"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert course.release_notebook.read_text() == RELEASE.read_text(), "release/ is stale: run `make release`"


def test_example_submissions_are_up_to_date(tmp_path):
    course = course_copy(tmp_path)
    for path in write_examples(course):
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `python -m coursekit examples`"
    assert (ROOT / "submitted" / MALFORMED[0]).is_dir()


@pytest.mark.slow
def test_nbgrader_autograde_gives_full_points_to_the_source_and_zero_to_the_release(tmp_path):
    from nbgrader.api import Gradebook

    course_copy(tmp_path)
    for student, notebook in (("alice", SOURCE), ("bob", RELEASE)):
        folder = tmp_path / "submitted" / student / "classifier_from_scratch"
        folder.mkdir(parents=True)
        shutil.copy(notebook, folder)
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    for command in (["generate_assignment", "classifier_from_scratch", "--force"],
                    ["autograde", "classifier_from_scratch", "--force"]):
        run = subprocess.run(
            [str(scripts / "nbgrader"), *command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        alice = gradebook.find_submission("classifier_from_scratch", "alice")
        bob = gradebook.find_submission("classifier_from_scratch", "bob")
        assert (alice.code_score, alice.max_code_score) == (80, 80)
        assert bob.code_score == 0
        assert alice.max_score == 100


def test_reference_solution_uses_only_tensor_primitives():
    from coursekit.examples import solved
    from coursekit.grading.sanitize import sanitize
    from coursekit.grading.scan import scan_cells

    release = nbformat.read(RELEASE, as_version=4)
    clean = sanitize(solved(Course(ROOT)), release)
    assert scan_cells([(c.index, c.source) for c in clean.editable]) == []


# ---- the second edition: validation split, the train test's reach, derivations, diagnoses, rubric

MODEL_SWEEPS = {"regression": "regression_sweep", "logistic": "logistic_sweep", "mlp": "mlp_sweep"}
TUNING_CELLS = [
    "validation_split",
    "validation_tools",
    "least_squares",
    "onehot_control",
    "overfit_small",
    *MODEL_SWEEPS.values(),
]


def grade_ids(notebook) -> list:
    return [nbgrader_meta(c).get("grade_id") for c in notebook.cells]


def test_settings_are_chosen_on_a_validation_split_and_the_final_models_use_all_training_images(source_notebook):
    split = cell_by_id(source_notebook, "validation_split")
    assert nbgrader_meta(split)["locked"] and "manual_seed" in split.source
    assert all(name in split.source for name in ("x_fit", "y_fit", "x_val", "y_val"))
    ids = grade_ids(source_notebook)
    for model, sweep in MODEL_SWEEPS.items():
        assert ids.index("validation_split") < ids.index(sweep) < ids.index(model), f"{sweep} must come before {model}"
        assert "sweep(" in cell_by_id(source_notebook, sweep).source
        assert "x_train" in cell_by_id(source_notebook, model).source, f"{model} is trained on all of x_train"
    tools = cell_by_id(source_notebook, "validation_tools").source
    assert "x_fit" in tools and "x_val" in tools


def test_no_tuning_cell_looks_at_the_test_set(source_notebook):
    looking = [
        g
        for g in TUNING_CELLS
        if "x_test" in cell_by_id(source_notebook, g).source or "y_test" in cell_by_id(source_notebook, g).source
    ]
    assert looking == []


TRAIN_BUGS = {
    "no shuffle": ("order = torch.randperm(n, generator=generator)", "order = torch.arange(n)"),
    "the same shuffle every epoch": (
        "order = torch.randperm(n, generator=generator)",
        "order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))",
    ),
    "drops the last, smaller batch": (
        "for start in range(0, n, batch_size):",
        "for start in range(0, n - batch_size + 1, batch_size):",
    ),
    "averages batch means without weights": (
        "total += loss.item() * len(batch)\n        losses.append(total / n)",
        "total += loss.item()\n        losses.append(total / math.ceil(n / batch_size))",
    ),
    "sums batch means, divides by N": ("total += loss.item() * len(batch)", "total += loss.item()"),
    "returns the last batch's loss": ("losses.append(total / n)", "losses.append(loss.item())"),
}


def run_visible_train_test(edits) -> Exception | None:
    """Run Part 1 of the solved release notebook (visible tests only) in-process; the test_train cell's error."""
    from coursekit.examples import build

    notebook = build(Course(ROOT), edits)
    namespace: dict = {}
    exec("import math\nimport torch\ntorch.set_grad_enabled(False)", namespace)
    ids = grade_ids(notebook)
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in notebook.cells[ids.index("grad_check_tools"):ids.index("test_train")]:
            if cell.cell_type == "code":
                exec(cell.source, namespace)
        try:
            exec(cell_by_id(notebook, "test_train").source, namespace)
        except Exception as error:  # noqa: BLE001 - the test cell's failure is the result
            return error
    return None


def test_the_visible_train_test_passes_the_reference():
    assert run_visible_train_test([]) is None


@pytest.mark.parametrize("bug", TRAIN_BUGS)
def test_the_visible_train_test_catches(bug):
    from coursekit.examples import replace

    old, new = TRAIN_BUGS[bug]
    error = run_visible_train_test([replace("train", old, new)])
    assert isinstance(error, AssertionError), f"a train that {bug} passes the visible test ({error!r})"


DERIVATIONS = {
    "linear_md": "x.T @ grad_out",
    "relu_md": "[x_{nk} > 0]",
    "mse_loss_md": "2 d_i / N",
    "cross_entropy_md": "(softmax - onehot) / N",
}


def test_each_backward_has_a_derivation_exercise_with_the_formula_only_behind_a_hint(source_notebook):
    for grade_id, formula in DERIVATIONS.items():
        text = cell_by_id(source_notebook, grade_id).source
        hint = text[text.index("<details>"):text.index("</details>")]
        assert "**Exercise" in text and "<summary>" in hint and formula in hint, grade_id
        assert formula not in text.replace(hint, ""), f"{grade_id} states the formula outside its hint"
    release = nbformat.read(RELEASE, as_version=4)
    visible_tests = "\n".join(c.source for c in release.cells if nbgrader_meta(c).get("grade"))
    for formula in ("2 (pred - target) / N", "(softmax - onehot) / N", "(p - 1) / N", "x.T @ grad_out"):
        assert formula not in visible_tests


def diagnose_function(source_notebook):
    namespace: dict = {}
    exec("import math\nimport torch\n" + cell_by_id(source_notebook, "diagnosis_tools").source, namespace)
    return namespace["diagnose"]


@pytest.mark.parametrize("symptom, losses, params, train_loss, accuracy, cause", [
    ("nan weights", [2.3, 1.0], [torch.tensor([1.0, math.nan])], 0.5, 0.5, "nan or inf"),
    ("flat loss", [2.30, 2.29, 2.28], [torch.ones(2)], 2.28, 0.15, "flat"),
    ("no shuffle", [0.9, 0.15], [torch.ones(2)], 7.9, 0.19, "shuffle"),
    ("chance accuracy", [2.3, 1.2], [torch.ones(2)], 1.3, 0.1, "chance"),
    ("just undertrained", [2.3, 0.5], [torch.ones(2)], 0.5, 0.85, "validation split"),
])
def test_a_failing_model_test_names_the_likely_cause(
    source_notebook, symptom, losses, params, train_loss, accuracy, cause
):
    assert cause in diagnose_function(source_notebook)(losses, params, train_loss, accuracy)


def test_model_tests_diagnose_instead_of_always_suggesting_tuning(source_notebook):
    for grade_id in ("test_regression", "test_logistic", "test_mlp"):
        visible = cell_by_id(source_notebook, grade_id).source.split("### BEGIN HIDDEN TESTS")[0]
        assert "diagnose(" in visible and "tune lr" not in visible


def test_the_introduction_estimates_the_working_time_of_every_part(source_notebook):
    rows = [line for line in cell_by_id(source_notebook, "intro").source.splitlines() if line.startswith("| Part ")]
    assert len(rows) == 6 and all(re.search(r"\d+ (min|h)", row.split("|")[-2]) for row in rows)


def test_the_rubric_covers_every_answer_graded_by_hand_with_its_points():
    text = (ROOT / "instructor" / "rubric.md").read_text()
    sections = {s.split()[0]: s for s in re.split(r"^## ", text, flags=re.M)[1:]}
    for cell in load_rubric(SOURCE).manual:
        section = sections[cell.grade_id]
        assert f"({cell.points:g} points)" in section.splitlines()[0]
        criteria = [int(p) for p in re.findall(r"^- \*\*[A-Z]\d \((\d+)\)", section, flags=re.M)]
        assert sum(criteria) == cell.points, cell.grade_id
        assert "Partial" in section and "Comment snippets" in section
    assert "instructor/rubric.md" in (ROOT / "README.md").read_text()
    assert [p.name for p in SOURCE.parent.iterdir()] == [SOURCE.name], (
        "nbgrader would release every file of this folder"
    )


DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


@pytest.mark.slow
def test_every_decimal_the_reference_answers_state_is_printed_by_a_cell():
    from nbclient import NotebookClient

    executed = nbformat.read(SOURCE, as_version=4)
    NotebookClient(executed, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(SOURCE.parent)}}).execute()
    outputs = [out for c in executed.cells if c.cell_type == "code" for out in c.outputs]
    assert [out for out in outputs if out.output_type == "error"] == []
    printed = [float(v) for out in outputs if out.output_type == "stream" for v in DECIMAL.findall(out.text)]
    for grade_id in ("regression_answer", "comparison_answer"):
        for number in DECIMAL.findall(cell_by_id(executed, grade_id).source):
            digits = len(number.split(".")[1])
            assert any(abs(round(value, digits) - float(number)) < 1e-9 for value in printed), \
                f"{grade_id} states {number}, which no cell prints"
