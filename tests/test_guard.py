"""The run-time guard (coursekit/sandbox/guard.py), loaded as the kernel loads it, without a kernel:
what it records, where it says the call came from, and what it leaves alone."""
from __future__ import annotations

import builtins
import sys
import types

import pytest
import torch

from conftest import ROOT

CELL, PROVIDED = "/tmp/ipykernel_1/111.py", "/tmp/ipykernel_1/222.py"


class FakeShell:
    """What the guard asks of IPython: which file is which cell's code, and the running cell."""

    def __init__(self):
        self.compile = types.SimpleNamespace(_filename_map={CELL: 5, PROVIDED: 6})
        self.execution_count = 8
        self.user_ns = {}


@pytest.fixture
def guard(monkeypatch):
    monkeypatch.setattr(builtins, "get_ipython", FakeShell, raising=False)
    module = types.ModuleType("coursekit_guard")
    exec(compile((ROOT / "coursekit/sandbox/guard.py").read_text(), "coursekit_guard", "exec"), module.__dict__)
    grad_mode = torch.is_grad_enabled()
    yield module
    while any(mode is module.GUARD for mode in torch.overrides._get_current_function_mode_stack()):
        module.GUARD.__exit__(None, None, None)
    torch.set_grad_enabled(grad_mode)


def run_as(filename: str, code: str, **names):
    exec(compile(code, filename, "exec"), {"torch": torch, **names})


def calls(guard):
    return [(c["execution"], c["dynamic"], c["line"], c["running"], c["api"], c["rule"]) for c in guard.after_cell()["calls"]]


def test_hidden_spellings_are_recorded_with_cell_and_line(guard):
    guard.install(True)
    x = torch.randn(3, 4)
    run_as(CELL, "getattr(torch, bytes.fromhex('6c6f675f736f66746d6178').decode())(x, 1)\nx.softmax(1)\n"
                 "torch.special.logsumexp(x, 1)\ntorch.nn.functional.relu(x)", x=x)
    assert calls(guard) == [(5, False, 1, 7, "torch.log_softmax", "ready-made"),
                            (5, False, 2, 7, "torch.Tensor.softmax", "ready-made"),
                            (5, False, 3, 7, "torch.special.logsumexp", "ready-made"),
                            (5, False, 4, 7, "torch.nn.functional.relu", "torch-nn")]


def test_code_made_at_run_time_is_dynamic(guard):
    guard.install(True)
    run_as(CELL, "exec('torch.logsumexp(torch.ones(2, 2), 1)')")
    assert calls(guard) == [(None, True, 1, 7, "torch.logsumexp", "ready-made")]


def test_autograd_follows_the_course_switch(guard):
    guard.install(False)
    run_as(CELL, "w = torch.zeros(2).requires_grad_(True)\n(w * 2).sum().backward()\nw.grad\n"
                 "torch.optim.SGD([w], lr=0.1).step()")
    assert calls(guard) == [(5, False, 4, 7, "torch.optim", "torch-optim")]
    guard.GUARD.__exit__(None, None, None)
    guard.install(True)
    run_as(CELL, "torch.set_grad_enabled(True)\nw = torch.zeros(2)\nw.requires_grad_(True)")
    assert [c[4] for c in calls(guard)] == ["torch._C._set_grad_enabled", "torch.Tensor.requires_grad_"]
    assert guard.after_cell()["autograd"][0].startswith("grad mode is on")


def test_provided_code_library_code_and_allowed_calls_are_not_the_students(guard):
    guard.install(True)
    x = torch.randn(3, 4)
    library = f"{sys.prefix}/lib/python3.11/site-packages/somelib/helpers.py"
    run_as(library, "torch.log_softmax(x, 1)", x=x)
    run_as("coursekit_probe", "torch.log_softmax(x, 1)", x=x)
    run_as(CELL, "with torch.no_grad():\n    (x - x.max(1, keepdim=True).values).exp().sum(1).log()", x=x)
    run_as(PROVIDED, "torch.log_softmax(x, 1)", x=x)
    assert calls(guard) == [(6, False, 1, 7, "torch.log_softmax", "ready-made")]  # the grader drops provided cells


def test_removing_the_guard_is_visible(guard):
    guard.install(True)
    assert guard.after_cell()["guard_active"] is True
    torch._C._pop_torch_function_stack()
    assert guard.after_cell()["guard_active"] is False
