"""The graded backward passes are the student's to derive. The course's rule is that students may use
only the Fundamentals notebooks and must retype what they use, so none of the graded backwards' key
expressions may appear in the fundamentals notebook, nor anywhere a student reads them before
submitting: the released notebook's hints, provided code and visible tests."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from support import stated_backwards

FUNDAMENTALS = ROOT / "fundamentals" / "cross_entropy_logsumexp.ipynb"

GRADED_BACKWARD_FUNCTIONS = {"linear_backward", "relu_backward", "mse_backward", "grad_by_hand"}


def all_text(path: Path) -> str:
    return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)


@pytest.mark.parametrize(
    "text, layer",
    [
        ("self.grads['W'] = self.x.T @ grad_out", "Linear"),
        ("return grad_out @ self.params['W'].T", "Linear"),
        ("db = G.sum(dim=0)", "Linear"),
        (r"$\sum_n x_{ni}\, g_{nj}$", "Linear"),
        ("return grad_out * self.mask", "ReLU"),
        ("Cache the mask `x > 0`", "ReLU"),
        ("G * (x > 0)", "ReLU"),
        ("$2 d_i / N$", "MSELoss"),
        ("2 * self.diff / self.diff.numel()", "MSELoss"),
        ("2 * (pred - t) / len(t)", "MSELoss"),
        ("`(softmax - onehot) / N`", "CrossEntropyLoss"),
        ("grad[torch.arange(n), self.target] -= 1", "CrossEntropyLoss"),
        (r"\frac{p_{ik} - [k = y_i]}{N}", "CrossEntropyLoss"),
    ],
)
def test_each_key_expression_is_recognised(text, layer):
    assert [found for found, _ in stated_backwards(text)] == [layer]


@pytest.mark.parametrize(
    "text",
    [
        "return G * (1 - out ** 2)",
        "(G * x).sum(), G.sum(), a * G",
        "2 * w * (p - t)",
        "x.T @ X + lam * penalty",
        "torch.randn(n_in, n_out) * (2 / n_in) ** 0.5",
    ],
)
def test_the_method_on_other_layers_is_not_mistaken_for_a_graded_backward(text):
    assert stated_backwards(text) == []


def test_the_fundamentals_notebook_states_no_graded_backward():
    assert stated_backwards(all_text(FUNDAMENTALS)) == []


def test_the_fundamentals_notebook_defines_no_graded_backward():
    defined = {
        node.name
        for cell in nbformat.read(FUNDAMENTALS, as_version=4).cells
        if cell.cell_type == "code"
        for node in ast.walk(ast.parse(cell.source))
        if isinstance(node, ast.FunctionDef)
    }
    assert defined & GRADED_BACKWARD_FUNCTIONS == set()


def test_the_release_states_no_graded_backward():
    """Hints, provided code and visible tests: everything a student reads before submitting."""
    from conftest import RELEASE

    assert stated_backwards(all_text(RELEASE)) == []
