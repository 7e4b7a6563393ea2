"""Tests for the reference notebook fundamentals/cross_entropy_logsumexp.ipynb.

Fast tests check its structure as stored; the slow test runs it headless, which
checks every claim in it, since each claim is an assert in the notebook itself.
"""
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
}


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
    too_long = [i for i, cell in enumerate(nb.cells)
                if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_CODE_LINES]
    assert too_long == []


def test_every_code_cell_follows_a_markdown_cell(nb):
    unexplained = [i for i, cell in enumerate(nb.cells)
                   if cell.cell_type == "code"
                   and (i == 0 or nb.cells[i - 1].cell_type != "markdown"
                        or not nb.cells[i - 1].source.strip())]
    assert unexplained == []


def test_answers_cell_is_collapsed(nb):
    hidden = [cell for cell in nb.cells if cell.cell_type == "markdown"
              and cell.metadata.get("jupyter", {}).get("source_hidden") is True]
    assert len(hidden) == 1
    assert "<details>" in hidden[0].source and "<summary>Answers</summary>" in hidden[0].source
    assert "</details>" in hidden[0].source


@pytest.mark.parametrize("topic, snippet", TOPICS.items())
def test_notebook_explains_and_asserts_topic(nb, topic, snippet):
    prose = "\n".join(sources(nb, "markdown")).lower()
    assert topic.lower() in prose
    assert any(snippet in src and "assert " in src for src in sources(nb, "code"))


def test_notebook_is_stored_without_outputs(nb):
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert dirty == []


@pytest.mark.slow
def test_notebook_runs_headless_without_error():
    executed = read_notebook()
    client = NotebookClient(executed, kernel_name="python3", timeout=60,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError if any cell (or any assert in it) fails
    errors = [out for cell in executed.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert errors == []
