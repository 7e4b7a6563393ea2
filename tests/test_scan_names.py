"""The static scanner's names: what a name denotes across cells, the preamble and star imports, and which
`.backward`/`.grad` are the student's own (coursekit.grading.scan.resolver and .facts)."""
from __future__ import annotations

import pytest

from coursekit.grading.scan import scan_cells
from scan_cases import OWN_BACKWARD, OWN_LAYER, STUDENT_SOLUTION
from support import SCAN_PREAMBLE, V, cell, scan, triples


def test_realistic_clean_solution_has_no_findings():
    assert scan(*STUDENT_SOLUTION) == []


def test_realistic_solution_with_autograd_is_caught():
    cells = list(STUDENT_SOLUTION)
    assert "grad = loss_fn.backward()" in cells[2]
    cells[2] = cells[2].replace("grad = loss_fn.backward()",
                                "loss.backward()\n        grad = loss_fn.backward()")
    found = scan(*cells)
    assert triples(found) == [(V, "autograd", 16)]
    assert found[0].cell == 2


@pytest.mark.parametrize("source, expected", [c[1:] for c in OWN_BACKWARD],
                         ids=[c[0] for c in OWN_BACKWARD])
def test_backward_with_student_layers(source, expected):
    found = scan(OWN_LAYER, source)
    assert [(f.severity, f.rule, f.line) for f in found if f.cell == 1] == expected
    assert all(f.cell == 1 for f in found)


def test_grad_attribute_owned_by_student_parameters():
    own_param = cell("""
        class Param:
            def __init__(self, data):
                self.data = data
                self.grad = None
        """)
    assert scan(own_param, "for p in params:\n    p.data -= lr * p.grad") == []
    # a torch tensor's .grad is still autograd
    found = scan(own_param, "w = torch.randn(3)\nw -= lr * w.grad")
    assert triples(found) == [(V, "autograd", 2)]


def test_imports_in_earlier_cell_apply_later():
    found = scan("import torch.nn.functional as Fn\nimport torch as t", "x = 1\ny = Fn.relu(x)",
                 "t.nn.Linear(1, 1)")
    assert [(f.cell, f.line, f.rule) for f in found] == [
        (0, 1, "torch.nn"), (1, 2, "torch.nn"), (2, 1, "torch.nn")]


def test_alias_assignment_in_earlier_cell_applies_later():
    found = scan("ag = torch.autograd", "w = 1\nag.grad(l, w)")
    assert [(f.cell, f.line, f.rule) for f in found] == [(0, 1, "autograd"), (1, 2, "autograd")]


def test_student_def_in_later_cell_silences_fastai_name():
    assert triples(scan("opt = SGD(ps, 0.1)")) == [(V, "fastai-training", 1)]
    assert scan("opt = SGD(ps, 0.1)", "def SGD(params, lr):\n    return params") == []


def test_cell_indices_are_the_callers():
    found = scan_cells([(7, "x = 1"), (12, "y = 2\nloss.backward()")], preamble=SCAN_PREAMBLE)
    assert [(f.cell, f.line) for f in found] == [(12, 2)]


def test_preamble_is_not_reported_but_defines_names():
    preamble = SCAN_PREAMBLE + "import torch.nn as tnn\nloss.backward()\n"
    found = scan("layer = tnn.Linear(2, 2)", preamble=preamble)
    assert triples(found) == [(V, "torch.nn", 1)]
    assert all(f.cell == 0 for f in found)


def test_preamble_with_classes_defines_backward_contract():
    source = "for l in layers:\n    g = l.backward(g)"
    assert triples(scan(source)) == [(V, "autograd", 2)]
    preamble = SCAN_PREAMBLE + "class Layer:\n    def backward(self, grad_out):\n        raise NotImplementedError\n"
    assert scan(source, preamble=preamble) == []


def test_star_import_in_student_cell_binds_names():
    found = scan("from fastai.vision.all import *\nF.relu(x)", preamble="")
    assert triples(found) == [(V, "torch.nn", 2)]


def test_without_preamble_fastai_names_are_still_known():
    assert triples(scan("learn = Learner(dls, m)\ny = F.relu(x)", preamble="")) == [
        (V, "fastai-training", 1), (V, "torch.nn", 2)]


def test_source_as_list_of_lines():
    found = scan_cells([(0, ["x = 1\n", "loss.backward()\n"])])
    assert triples(found) == [(V, "autograd", 2)]

