"""The in-kernel instrumentation (coursekit/in_sandbox/instrument.py), loaded as the kernel loads it, without
a kernel: what the guard records and where it says a call came from, imported data, and training provenance."""
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
        self.ast_transformers = []


def get_shell():
    return builtins.get_ipython()


@pytest.fixture
def guard(monkeypatch):
    shell = FakeShell()
    monkeypatch.setattr(builtins, "get_ipython", lambda: shell, raising=False)
    module = types.ModuleType("coursekit_guard")
    exec(compile((ROOT / "coursekit/in_sandbox/instrument.py").read_text(), "coursekit_guard", "exec"), module.__dict__)
    for name in module.LOADERS:  # install() wraps them: put the originals back afterwards
        owner, _, attribute = name.rpartition(".")
        target = __import__(owner, fromlist=[attribute])
        monkeypatch.setattr(target, attribute, getattr(target, attribute))
    grad_mode = torch.is_grad_enabled()
    yield module
    if module.GUARD is not None:
        module.GUARD.uninstall()
    torch.set_grad_enabled(grad_mode)


def run_as(filename: str, code: str, **names):
    exec(compile(code, filename, "exec"), {"torch": torch, **names})


def calls(guard):
    return [(c["execution"], c["dynamic"], c["line"], c["running"], c["api"], c["rule"]) for c in guard.after_cell()["calls"]]


def test_hidden_spellings_are_recorded_with_cell_and_line(guard):
    guard.install(True)
    x = torch.randn(3, 4)
    run_as(CELL, "getattr(torch, bytes.fromhex('6c6f675f736f66746d6178').decode())(x, 1)\nx.softmax(1)\n"
                 "torch.special.logsumexp(x, 1)\ntorch.nn.functional.relu(x)\n"
                 "torch.nn.Linear(4, 2)(x)\ntorch.nn.functional.cross_entropy(x, torch.zeros(3, dtype=torch.long))", x=x)
    assert calls(guard) == [(5, False, 1, 7, "torch.log_softmax", "ready-made"),
                            (5, False, 2, 7, "torch.Tensor.softmax", "ready-made"),
                            (5, False, 3, 7, "torch.special.logsumexp", "ready-made"),
                            (5, False, 4, 7, "torch.nn.functional.relu", "torch-nn"),
                            (5, False, 5, 7, "torch.Tensor.grad_fn", "autograd"),  # nn.Parameter reads it
                            (5, False, 5, 7, "torch.nn.init.kaiming_uniform_", "torch-nn"),
                            (5, False, 5, 7, "torch.nn.init.uniform_", "torch-nn"),
                            (5, False, 5, 7, "torch.nn.functional.linear", "torch-nn"),
                            (5, False, 6, 7, "torch.nn.functional.cross_entropy", "torch-nn")]


def test_code_made_at_run_time_is_dynamic(guard):
    guard.install(True)
    run_as(CELL, "exec('torch.logsumexp(torch.ones(2, 2), 1)')")
    assert calls(guard) == [(None, True, 1, 7, "torch.logsumexp", "ready-made")]


def test_autograd_follows_the_course_switch(guard):
    guard.install(False)
    with torch.enable_grad():  # whatever grad mode an earlier test left
        run_as(CELL, "w = torch.zeros(2).requires_grad_(True)\n(w * 2).sum().backward()\nw.grad\n"
                     "torch.optim.SGD([w], lr=0.1).step()")
    assert calls(guard) == [(5, False, 4, 7, "torch.optim", "torch-optim")]
    guard.GUARD.uninstall()
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
    torch.log_softmax = torch._C._VariableFunctions.log_softmax
    assert guard.after_cell()["guard_active"] is False


class Layer:
    def __init__(self, W):
        self.params, self.grads = {"W": W.clone(), "b": torch.zeros(W.shape[1])}, {}


class Model:
    def __init__(self, seed=0):
        self.layers = [Layer(torch.randn(3, 2, generator=torch.Generator().manual_seed(seed)))]


def toy_train(model, lr, epochs, seed=0):
    """Deterministic for a seed: each epoch nudges the weights by seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for layer in model.layers:
            layer.params["W"] -= lr * torch.randn(layer.params["W"].shape, generator=generator)
    return [0.0] * epochs


class Recorder:
    def __init__(self):
        self.meta, self.tensors = {}, {}

    def value(self, key, tensor):
        self.tensors[key] = tensor


def export(guard, **models):
    rec = Recorder()
    guard.export_training(models, list(models), rec)
    return rec


def test_training_in_two_stages_is_followed_and_replays(guard):
    guard.install(True)
    train = guard.follow("train", toy_train)
    model = Model()
    fresh = model.layers[0].params["W"].clone()
    train(model, 0.5, 3)
    train(model, lr=0.1, epochs=2, seed=4)
    rec = export(guard, mlp_model=model)
    meta = rec.meta["mlp_model"]
    assert (meta["trained"], meta["events"], meta["train_calls"], meta["changed_after"], meta["replaced_in"]) == \
        (True, 2, 2, False, None)
    assert meta["replay_difference"] == 0.0 and meta["replay_scale"] > 0
    assert torch.equal(rec.tensors["mlp_model.start.0"], fresh)


def test_weights_set_by_hand_or_between_calls_are_seen(guard):
    guard.install(True)
    train = guard.follow("train", toy_train)
    loaded = Model(seed=7)
    swapped = Model()
    train(swapped, 0.5, 1)
    swapped.layers[0].params["W"] = torch.ones(3, 2)
    train(swapped, 0.5, 1)
    changed = Model()
    train(changed, 0.5, 1)
    changed.layers[0].params["W"] += 1
    guard.after_cell(12, 7)  # the runner: the cell run as execution 7 is the notebook's cell 12
    rec = export(guard, loaded=loaded, swapped=swapped, changed=changed)
    assert rec.meta["loaded"] == {"trained": False, "own_object_trained": False}
    assert (rec.meta["swapped"]["replaced_in"], rec.meta["swapped"]["began_in"]) == (12, 12)
    assert rec.meta["changed"]["changed_after"] is True


def test_a_copy_of_a_trained_model_keeps_its_provenance(guard):
    import copy

    guard.install(True)
    train = guard.follow("train", toy_train)
    model = Model()
    train(model, 0.5, 2)
    assert export(guard, copied=copy.deepcopy(model)).meta["copied"]["trained"] is True


def test_a_train_that_ignores_its_seed_does_not_replay(guard):
    guard.install(True)

    def unseeded(model, lr, epochs):
        for layer in model.layers:
            layer.params["W"] -= lr * torch.randn(layer.params["W"].shape)

    model = Model()
    guard.follow("train", unseeded)(model, 0.5, 1)
    assert export(guard, model=model).meta["model"]["replay_difference"] > 0


def test_a_cell_that_defines_train_follows_it_at_once(guard):
    guard.install(True)
    (transformer,) = get_shell().ast_transformers
    tree = transformer.visit(__import__("ast").parse("def train(model):\n    pass\nx = 1"))
    assert [type(node).__name__ for node in tree.body] == ["FunctionDef", "Assign", "Assign"]
    assert "__coursekit_guard.follow('train', train)" in __import__("ast").unparse(tree.body[1])


def test_loading_tensors_is_recorded_for_review(guard, tmp_path):
    guard.install(True)
    torch.save({"W": torch.ones(2)}, tmp_path / "w.pt")
    run_as(CELL, f"import torch\nweights = torch.load({str(tmp_path / 'w.pt')!r})")
    report = guard.after_cell()
    assert [(i["execution"], i["line"], i["api"]) for i in report["imports"]] == [(5, 2, "torch.load")]


def test_a_train_with_autograd_replays_where_autograd_is_allowed(guard):
    guard.install(False)

    def autograd_train(model, lr, epochs):
        torch.set_grad_enabled(True)
        W = model.layers[0].params["W"].requires_grad_(True)
        for _ in range(epochs):
            (W ** 2).sum().backward()
            with torch.no_grad():
                W -= lr * W.grad
            W.grad = None

    model = Model()
    guard.follow("train", autograd_train)(model, 0.1, 3)
    model.layers[0].cached = model.layers[0].params["W"] * 2  # a graph: this model cannot be deep-copied
    meta = export(guard, model=model).meta["model"]
    assert meta["trained"] and not meta["changed_after"] and meta["replay_difference"] == 0.0
