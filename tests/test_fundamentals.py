"""Tests for the reference notebook fundamentals/cross_entropy_logsumexp.ipynb.

Fast tests check its structure as stored; the slow test runs it headless, which
checks every claim in it, since each claim is an assert in the notebook itself.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "fundamentals" / "cross_entropy_logsumexp.ipynb"
MAX_CODE_LINES = 15

# topic named in the prose -> code that must exercise it in a cell with an assert
TOPICS = {
    "overflow": "torch.isinf(",
    "torch.logsumexp": "torch.logsumexp(",
    "gather": ".gather(",
    "F.cross_entropy": "F.cross_entropy(",
    "F.nll_loss": "F.nll_loss(",
    "ignore_index": "ignore_index=",
    "label_smoothing": "label_smoothing=",
    "weight": "weight=",
    "central difference": "/ (2 * h)",
    # the method of writing a backward pass, on layers the assignment does not grade
    "scalar affine map": "affine_backward(",
    "tanh": "tanh_backward(",
    "elementwise product": "product_backward(",
    "weighted sum of squares": "weighted_squares_backward(",
    "end to end": "weighted_squares_backward(a * h + c",
    "float64": "err32 > 1e-2",
}
ASSIGNMENT = (
    Path(__file__).resolve().parents[1] / "source" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
)
# the gradient check's step and relative error, written the same way in both notebooks
SHARED_GRADIENT_CHECK = ["def numeric_grad(f, x, h=1e-5):", "(a - b).abs() / (a.abs() + b.abs()).clamp(min=1e-8)"]


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def nb():
    return read_notebook()


def sources(nb, cell_type):
    return [cell.source for cell in nb.cells if cell.cell_type == cell_type]


def test_notebook_is_valid_nbformat_4_5_for_python3(nb):
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.language_info.name == "python"


def test_code_cells_are_at_most_15_lines(nb):
    too_long = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_CODE_LINES
    ]
    assert too_long == []


def test_every_code_cell_follows_a_markdown_cell(nb):
    unexplained = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and (i == 0 or nb.cells[i - 1].cell_type != "markdown" or not nb.cells[i - 1].source.strip())
    ]
    assert unexplained == []


def test_answers_cell_is_collapsed(nb):
    hidden = [
        cell
        for cell in nb.cells
        if cell.cell_type == "markdown" and cell.metadata.get("jupyter", {}).get("source_hidden") is True
    ]
    assert len(hidden) == 1
    assert "<details>" in hidden[0].source and "<summary>Answers</summary>" in hidden[0].source
    assert "</details>" in hidden[0].source


@pytest.mark.parametrize("topic, snippet", TOPICS.items())
def test_notebook_explains_and_asserts_topic(nb, topic, snippet):
    prose = "\n".join(sources(nb, "markdown")).lower()
    assert topic.lower() in prose
    assert any(snippet in src and "assert " in src for src in sources(nb, "code"))


def test_gradient_check_is_defined_as_in_the_assignment(nb):
    assignment = "\n".join(c.source for c in nbformat.read(ASSIGNMENT, as_version=4).cells if c.cell_type == "code")
    code = "\n".join(sources(nb, "code"))
    for snippet in SHARED_GRADIENT_CHECK:
        assert snippet in code and snippet in assignment, snippet


def test_no_one_hot_from_torch_nn(nb):
    assert not any("one_hot" in src for src in sources(nb, "code"))


def defined_functions(nb):
    """(name, source) of every function the notebook defines: what a student may retype."""
    found = []
    for src in sources(nb, "code"):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef):
                found.append((node.name, ast.get_source_segment(src, node)))
    return found


def test_every_function_it_defines_is_allowed_in_the_assignment(nb):
    from coursekit.grading.scan import scan_cells

    functions = defined_functions(nb)
    assert {
        "log_softmax",
        "cross_entropy",
        "numeric_grad",
        "rel_error",
        "affine_backward",
        "tanh_backward",
        "product_backward",
        "weighted_squares_backward",
    } <= {n for n, _ in functions}
    findings = scan_cells(
        list(enumerate(src for _, src in functions)), preamble="import itertools\nimport math\nimport torch\n"
    )
    assert [f for f in findings if f.severity == "violation"] == []


RETYPING_RULE = "You may refer only to Fundamentals notebooks, and you must retype all code that you use."


def test_it_states_the_courses_retyping_rule_in_its_own_words(nb):
    assert RETYPING_RULE in sources(nb, "markdown")[0]


def test_only_a_tensors_backward_is_forbidden_not_the_students_own(nb):
    intro = " ".join(sources(nb, "markdown")[0].split())
    assert "scanner rejects" not in intro
    for mention in re.finditer(r"`\.backward\(\)`", intro):
        assert "tensor's" in intro[mention.start() - 40 : mention.start()], intro[mention.start() - 80 : mention.end()]
    assert "backward` methods of your own layers" in intro


def test_notebook_is_stored_without_outputs(nb):
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert dirty == []


@pytest.mark.slow
def test_notebook_runs_headless_without_error():
    executed = read_notebook()
    client = NotebookClient(
        executed, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError if any cell (or any assert in it) fails
    errors = [
        out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert errors == []
