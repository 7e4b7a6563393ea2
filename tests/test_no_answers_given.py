"""The graded backward passes are the student's to derive. The course's rule is that students may use
only the Fundamentals notebooks and must retype what they use, so none of the graded backwards' key
expressions may appear in the fundamentals notebook, nor anywhere a student reads them before
submitting: the released notebook's hints, provided code and visible tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

FUNDAMENTALS = ROOT / "fundamentals" / "cross_entropy_logsumexp.ipynb"

# graded backward -> its key expressions, in code and in LaTeX, as the previous editions wrote them
GRADED_BACKWARDS = {
    "Linear": [
        r"\.T\s*@\s*(grad_out|G|g|upstream)\b",  # dW = x.T @ grad_out
        r"\b(grad_out|G|upstream)\s*@\s*[\w.\[\]\"']*\.T\b",  # dx = grad_out @ W.T
        r"\b(grad_out|G)\.sum\(\s*(dim\s*=\s*)?0\s*\)",  # db = grad_out.sum(dim=0)
        r"\\sum_n\s*x_\{ni\}",  # the same, in index notation
        r"x\^\\top\s*g",
    ],  # one example's outer product
    "ReLU": [
        r"\b(grad_out|G|g)\s*\*\s*\(?\s*(self\.)?(mask|x\s*>\s*0)",  # grad_out * mask
        r"where\(\s*\w+\s*>\s*0\s*,\s*(grad_out|G|g)\b",
        r"g_\{nk\}\s*\\?,?\s*\[x_\{nk\}\s*>\s*0\]",
        r"cache the mask",
    ],
    "MSELoss": [r"2\s*\*?\s*\(?\s*(d_i|d|diff|self\.diff|pred\w*\s*-\s*t\w*|\\text\{pred\}_i\s*-\s*t_i)\s*\)?\s*/"],
    "CrossEntropyLoss": [
        r"softmax\S*\s*-\s*\\?(operatorname\{)?one-?hot",  # (softmax - onehot) / N
        r"p_\{?i\s*,?\s*k\}?\s*-\s*\[k\s*=\s*y_i\]",  # (p_ik - [k = y_i]) / N
        r"\]\s*-=\s*1\b",  # grad[rows, target] -= 1
        r"subtract 1 at",
        r"\(p\s*-\s*1\)\s*/\s*N",
    ],
}
GRADED_BACKWARD_FUNCTIONS = {"linear_backward", "relu_backward", "mse_backward", "grad_by_hand"}


def stated_backwards(text: str) -> list[tuple[str, str]]:
    """(graded layer, matched text) for every key expression of a graded backward found in text."""
    return [
        (layer, match.group(0))
        for layer, patterns in GRADED_BACKWARDS.items()
        for pattern in patterns
        for match in re.finditer(pattern, text, flags=re.IGNORECASE)
    ]


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
