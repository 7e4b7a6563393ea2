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
from support import stated_backwards

CONTRACT_TESTS = {
    "Linear": "test_linear",
    "ReLU": "test_relu",
    "Sequential": "test_sequential",
    "log_softmax": "test_log_softmax",
    "MSELoss": "test_mse_loss",
    "CrossEntropyLoss": "test_cross_entropy_loss",
    "sgd_step": "test_sgd_step",
    "train": "test_train",
    "accuracy": "test_accuracy",
    "regression_model": "test_regression",
    "logistic_model": "test_logistic",
    "mlp_model": "test_mlp",
}


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
    headings = [
        line
        for c in source_notebook.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("## ")
    ]
    assert [h.split(":")[0] for h in headings[:6]] == [f"## Part {n}" for n in range(6)]


def solution_lines(notebook) -> set[str]:
    """Distinctive lines written inside solution regions (those not also given outside them)."""
    region = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
    provided = "\n".join(region.sub("", c.source) for c in notebook.cells)
    lines = set()
    for cell in notebook.cells:
        for answer in region.findall(cell.source):
            lines |= {
                line.strip() for line in answer.splitlines() if len(line.strip()) > 15 and line.strip() not in provided
            }
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
    run = subprocess.run(
        [sys.executable, "-m", "coursekit", "--root", str(tmp_path), "release"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
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
    for command in (
        ["generate_assignment", "classifier_from_scratch", "--force"],
        ["autograde", "classifier_from_scratch", "--force"],
    ):
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
    "rule_tools",
    "least_squares",
    "onehot_control",
    "overfit_small",
    *MODEL_SWEEPS.values(),
]
MODEL_TESTS = ("test_regression", "test_logistic", "test_mlp")


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


def test_the_test_set_is_looked_at_once_in_the_final_report(source_notebook):
    """Only the data cell, the final report and the model tests (which check the floors) read the test set,
    and no visible test prints a test number: the student tunes on validation numbers."""
    reading = [
        nbgrader_meta(c).get("grade_id")
        for c in source_notebook.cells
        if c.cell_type == "code" and re.search(r"\b[xy]_test\b", c.source)
    ]
    assert reading == ["data_tensors", *MODEL_TESTS, "final_report"]
    for grade_id in MODEL_TESTS:
        visible = cell_by_id(source_notebook, grade_id).source.split("### BEGIN HIDDEN TESTS")[0]
        printing = [line for line in visible.splitlines() if "print(" in line or line.startswith("      ")]
        assert not any("test_" in line for line in printing), f"{grade_id} prints a test number"
        assert "settings_on_validation(" in visible, f"{grade_id} reports no validation number"


TRAIN_BUGS = {  # bug -> (edit of the reference train, what the visible test's message must say)
    "no shuffle": ("order = torch.randperm(n, generator=generator)", "order = torch.arange(n)", "shuffle them"),
    "the same shuffle every epoch": (
        "order = torch.randperm(n, generator=generator)",
        "order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))",
        "every epoch needs a new order",
    ),
    "drops the last, smaller batch": (
        "for start in range(0, n, batch_size):",
        "for start in range(0, n - batch_size + 1, batch_size):",
        "last, smaller batch dropped",
    ),
    "takes the targets with other indices": (
        "loss_fn.forward(model.forward(x[batch]), y[batch])",
        "loss_fn.forward(model.forward(x[batch]), y[start:start + batch_size])",
        "same indices (x[batch], y[batch])",
    ),
    "averages batch means without weights": (
        "total += loss.item() * len(batch)\n        losses.append(total / n)",
        "total += loss.item()\n        losses.append(total / math.ceil(n / batch_size))",
        "weighted by its size",
    ),
    "sums batch means, divides by N": (
        "total += loss.item() * len(batch)",
        "total += loss.item()",
        "weighted by its size",
    ),
    "returns the last batch's loss": (
        "losses.append(total / n)",
        "losses.append(loss.item())",
        "returned the last batch's loss",
    ),
}


def run_visible_test(grade_id: str, edits) -> Exception | None:
    """Run Part 1 of the solved release notebook (visible tests only) in-process, up to the test cell
    grade_id; that cell's error."""
    from coursekit.examples import build

    notebook = build(Course(ROOT), edits)
    namespace: dict = {}
    exec("import math\nimport torch\ntorch.set_grad_enabled(False)", namespace)
    ids = grade_ids(notebook)
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in notebook.cells[ids.index("grad_check_tools") : ids.index(grade_id)]:
            if cell.cell_type == "code":
                exec(cell.source, namespace)
        try:
            exec(cell_by_id(notebook, grade_id).source, namespace)
        except Exception as error:  # noqa: BLE001 - the test cell's failure is the result
            return error
    return None


def test_the_visible_train_test_passes_the_reference():
    assert run_visible_test("test_train", []) is None


@pytest.mark.parametrize("bug", TRAIN_BUGS)
def test_the_visible_train_test_catches(bug):
    from coursekit.examples import replace

    old, new, message = TRAIN_BUGS[bug]
    error = run_visible_test("test_train", [replace("train", old, new)])
    assert isinstance(error, AssertionError), f"a train that {bug} passes the visible test ({error!r})"
    assert message in str(error), f"a train that {bug} fails with an unspecific message: {error}"


@pytest.mark.parametrize(
    "bug, old, new",
    [
        ("runs the layers forward", "for layer in reversed(self.layers):", "for layer in self.layers:"),
        ("does not chain the gradients", "grad_out = layer.backward(grad_out)", "layer.backward(grad_out)"),
    ],
)
def test_a_wrong_sequential_backward_fails_with_a_message_not_a_raw_error(bug, old, new):
    from coursekit.examples import replace

    error = run_visible_test("test_sequential", [replace("sequential", old, new)])
    assert isinstance(error, AssertionError) and "REVERSE order" in str(error), f"Sequential that {bug}: {error!r}"


def test_the_visible_linear_test_checks_he_initialisation():
    from coursekit.examples import replace

    assert run_visible_test("test_linear", []) is None
    error = run_visible_test(
        "test_linear", [replace("linear", "torch.randn(n_in, n_out) * (2 / n_in) ** 0.5", "torch.randn(n_in, n_out)")]
    )
    assert isinstance(error, AssertionError) and "He initialisation" in str(error)


BACKWARD_EXERCISES = ("linear_md", "relu_md", "mse_loss_md", "cross_entropy_md")


@pytest.mark.parametrize("grade_id", BACKWARD_EXERCISES)
def test_each_backward_has_an_exercise_and_hints_in_stages_that_never_give_the_expression(source_notebook, grade_id):
    text = cell_by_id(source_notebook, grade_id).source
    hints = re.findall(r"<details>\s*<summary>(.*?)</summary>(.*?)</details>", text, flags=re.S)
    assert "**Exercise" in text or "**Question" in text
    assert [summary.split(",")[0] for summary, _ in hints] == ["Hint 1", "Hint 2"], hints
    assert "question" in hints[0][0] and hints[0][1].strip().endswith("?"), "the first hint is a question"
    assert "shapes" in hints[1][0] and re.search(r"shape|\((N|n_in), ", hints[1][1]), "the second hint gives the shapes"
    assert stated_backwards(text) == []


def test_the_method_of_deriving_a_backward_is_stated_before_the_exercises(source_notebook):
    text = cell_by_id(source_notebook, "part1_md").source
    assert all(
        step in text
        for step in ("**one element**", "**differentiate**", "**shape**", "**vectorise**", "**numeric gradient check**")
    )


def diagnose_function(source_notebook):
    namespace: dict = {}
    exec("import math\nimport torch\n" + cell_by_id(source_notebook, "diagnosis_tools").source, namespace)
    return namespace["diagnose"]


ALIVE = torch.ones(50, 4)  # every hidden unit positive somewhere
MOSTLY_DEAD = torch.cat([torch.ones(50, 1), -torch.ones(50, 3)], dim=1)


@pytest.mark.parametrize(
    "symptom, losses, params, train_loss, train_accuracy, hidden, cause",
    [
        ("nan weights", [2.3, 1.0], [torch.tensor([1.0, math.nan])], 0.5, 0.5, None, "nan or inf"),
        ("flat loss", [2.30, 2.29, 2.28], [torch.ones(2)], 2.28, 0.15, None, "flat"),
        ("no shuffle", [0.9, 0.15], [torch.ones(2)], 7.9, 0.19, None, "shuffle"),
        ("no shuffle, and a flat curve", [0.361, 0.37, 0.392], [torch.ones(2)], 7.9, 0.13, ALIVE, "shuffle"),
        (
            "dead units, and a flat curve",
            [2.40, 2.35, 2.33],
            [torch.ones(2)],
            2.33,
            0.11,
            MOSTLY_DEAD,
            "3 of 4 hidden units are dead",
        ),
        ("still falling", [2.7, 2.4, 2.2, 2.05], [torch.ones(2)], 2.0, 0.6, None, "still falling"),
        ("chance accuracy", [2.3, 1.2, 1.19], [torch.ones(2)], 1.3, 0.1, None, "chance"),
        ("just undertrained", [2.3, 0.5, 0.49], [torch.ones(2)], 0.5, 0.85, ALIVE, "validation split"),
    ],
)
def test_a_failing_model_test_names_the_likely_cause(
    source_notebook, symptom, losses, params, train_loss, train_accuracy, hidden, cause
):
    assert cause in diagnose_function(source_notebook)(losses, params, train_loss, train_accuracy, hidden)


def part1_namespace(edits=()) -> dict:
    """The solved release's Part 1 and its diagnoses, run in-process: Linear, ..., train, diagnose."""
    from coursekit.examples import build

    notebook, namespace = build(Course(ROOT), list(edits)), {}
    exec("import math\nimport torch\ntorch.set_grad_enabled(False)", namespace)
    ids = grade_ids(notebook)
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in notebook.cells[ids.index("grad_check_tools") : ids.index("part2_md")]:
            if cell.cell_type == "code" and not nbgrader_meta(cell).get("grade"):
                exec(cell.source, namespace)
        exec(cell_by_id(notebook, "diagnosis_tools").source, namespace)
    return namespace


def synthetic_digits(dim=196, per_class=100):
    """Ten overlapping classes of non-negative 'images', rows sorted by class as MNIST's are."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.rand(10, dim, generator=generator)
    y = torch.arange(10).repeat_interleave(per_class)
    x = (centers[y] * (1 + 1.5 * torch.randn(len(y), dim, generator=generator))).clamp(0, 1)
    return x, y


def diagnosis_of(ns, make_model, loss_fn, x, y, **settings) -> str:
    """Train a fresh model (seed 0) as a student would, then diagnose it the way the model tests do."""
    torch.manual_seed(0)
    model = make_model()
    losses = ns["train"](model, loss_fn, x, y, **settings)
    params = [p for layer in model.layers for p in layer.params.values()]
    out = model.forward(x)
    if loss_fn.__class__.__name__ == "MSELoss":
        return ns["diagnose"](losses, params, (out.reshape(-1) - y).pow(2).mean().item())
    first = model.layers[0]
    hidden = x @ first.params["W"] + first.params["b"] if len(model.layers) == 3 else None
    return ns["diagnose"](
        losses, params, ns["mean_cross_entropy"](out, y), (out.argmax(dim=1) == y).float().mean().item(), hidden
    )


def two_layers(ns, dim):
    return lambda: ns["Sequential"](ns["Linear"](dim, 30), ns["ReLU"](), ns["Linear"](30, 10))


def faults(ns, dim):
    """fault -> (a fresh model, its loss, the settings that produce the fault, what the message must say)."""
    return {
        "dead ReLUs after a learning rate too high": (
            two_layers(ns, dim),
            ns["CrossEntropyLoss"](),
            dict(lr=5.0, epochs=10, batch_size=16),
            "hidden units are dead",
        ),
        "a learning rate too small": (
            lambda: ns["Sequential"](ns["Linear"](dim, 10)),
            ns["CrossEntropyLoss"](),
            dict(lr=1e-4, epochs=20, batch_size=32),
            "a learning rate far too small",
        ),
        "nan after a learning rate too high": (
            lambda: ns["Sequential"](ns["Linear"](dim, 1)),
            ns["MSELoss"](),
            dict(lr=0.5, epochs=3, batch_size=32),
            "nan or inf",
        ),
    }


NO_SHUFFLE = TRAIN_BUGS["no shuffle"][:2]


@pytest.mark.parametrize(
    "fault",
    [
        "an unshuffled two-layer network",
        "dead ReLUs after a learning rate too high",
        "a learning rate too small",
        "nan after a learning rate too high",
    ],
)
def test_each_diagnosis_names_the_fault_that_produced_it(fault):
    """The real faults, trained with the reference's own code, on synthetic digits sorted by class."""
    from coursekit.examples import replace

    x, y = synthetic_digits()
    if fault == "an unshuffled two-layer network":
        ns = part1_namespace([replace("train", *NO_SHUFFLE)])
        message = diagnosis_of(
            ns, two_layers(ns, 196), ns["CrossEntropyLoss"](), x, y, lr=0.2, epochs=10, batch_size=16
        )
        assert "shuffle" in message, message
        return
    ns = part1_namespace()
    make_model, loss_fn, settings, expected = faults(ns, 196)[fault]
    message = diagnosis_of(ns, make_model, loss_fn, x, y.float() if expected == "nan or inf" else y, **settings)
    assert expected in message, message


@pytest.mark.slow
def test_each_diagnosis_names_the_fault_on_mnist_as_the_issue_found_them():
    """The faults of issue 26 on the real subset: an unshuffled two-layer network (flat reported losses, test
    accuracy near 0.13), lr 5 with most ReLUs dead, a learning rate too small, a regression that diverges."""
    from coursekit.data import load_subset, mnist_path
    from coursekit.examples import replace

    x, y, _, _ = load_subset(mnist_path())
    torch.set_num_threads(1)
    unshuffled = part1_namespace([replace("train", *NO_SHUFFLE)])
    message = diagnosis_of(
        unshuffled,
        two_layers(unshuffled, 784),
        unshuffled["CrossEntropyLoss"](),
        x,
        y,
        lr=0.2,
        epochs=30,
        batch_size=16,
    )
    assert "shuffle" in message, message
    ns = part1_namespace()
    for fault, (make_model, loss_fn, settings, expected) in faults(ns, 784).items():
        if fault == "a learning rate too small":
            settings = dict(lr=1e-5, epochs=40, batch_size=32)
        if expected == "nan or inf":
            settings = dict(settings, lr=0.05)
        targets = y.float() if expected == "nan or inf" else y
        message = diagnosis_of(ns, make_model, loss_fn, x, targets, **settings)
        assert expected in message, (fault, message)


QUESTIONS = {
    "derivation_answer": "cross_entropy_md",
    "regression_answer": "regression_question",
    "comparison_answer": "comparison_question",
    "reflection_answer": "part5_md",
}


def rubric_sections() -> dict[str, str]:
    text = (ROOT / "instructor" / "rubric.md").read_text()
    return {s.split()[0]: s for s in re.split(r"^## ", text, flags=re.M)[1:]}


def test_each_question_asks_exactly_what_its_rubric_grades(source_notebook):
    assert set(QUESTIONS) == {c.grade_id for c in load_rubric(SOURCE).manual}
    for answer, question in QUESTIONS.items():
        asked = set(re.findall(r"^\(([a-z])\) ", cell_by_id(source_notebook, question).source, flags=re.M))
        graded = set(re.findall(r"^- \*\*[A-Z]\d \(\d+\) \(([a-z])\)", rubric_sections()[answer], flags=re.M))
        assert asked and asked == graded, (
            f"{answer}: the question asks {sorted(asked)}, the rubric grades {sorted(graded)}"
        )


def test_the_prose_before_a_question_asks_instead_of_stating_the_answer(source_notebook):
    for grade_id in ("regression_means_note", "least_squares_note", "onehot_control_note"):
        text = cell_by_id(source_notebook, grade_id).source
        assert text.startswith("**To think about**") and text.rstrip().endswith("?"), grade_id
        assert not re.search(r"\.(\s|$)", re.sub(r"\(.*?\)", "", text)), f"{grade_id} makes a statement: {text}"


def test_a_derivation_is_graded_before_its_code(source_notebook):
    ids = grade_ids(source_notebook)
    assert ids.index("cross_entropy_md") + 1 == ids.index("derivation_answer") < ids.index("cross_entropy_loss")
    assert "**Question (5 points, graded by hand)" in cell_by_id(source_notebook, "cross_entropy_md").source
