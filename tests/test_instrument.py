"""The in-kernel instrumentation (coursekit/in_sandbox/instrument.py), loaded as the kernel loads it, without
a kernel: which forbidden calls are the student's (and which are torch's own, on behalf of an allowed
operation), where they are charged, tampering with the guard, imported data, and the training records."""
from __future__ import annotations

import ast
import builtins
import copy
import threading
import types

import pytest
import torch

from conftest import ROOT
from coursekit.in_sandbox.protocol import (
    FINGERPRINT_BITS,
    FINGERPRINT_COLUMNS,
    FINGERPRINT_SEED,
    FINGERPRINT_WIDTH,
    GuardReport,
)

CELL, PROVIDED = "/tmp/ipykernel_1/111.py", "/tmp/ipykernel_1/222.py"


class FakeShell:
    """What the guard asks of IPython: which file is which cell's code, and the running cell."""

    def __init__(self):
        self.compile = types.SimpleNamespace(_filename_map={CELL: 5, PROVIDED: 6})
        self.execution_count = 8
        self.user_ns = {"__name__": "__main__", "torch": torch}
        self.ast_transformers = []


def kernel_module(name: str, filename: str) -> types.ModuleType:
    """A file of in_sandbox/ executed as the runner executes it in the kernel: a module named `name`."""
    module = types.ModuleType(name)
    exec(compile((ROOT / "coursekit/in_sandbox" / filename).read_text(), name, "exec"), module.__dict__)
    return module


@pytest.fixture
def guard(monkeypatch):
    shell = FakeShell()
    monkeypatch.setattr(builtins, "get_ipython", lambda: shell, raising=False)
    module, record = kernel_module("coursekit_guard", "instrument.py"), kernel_module("coursekit_record",
                                                                                      "training_record.py")
    for name in module.LOADERS:  # install() wraps them: put the originals back afterwards
        owner, _, attribute = name.rpartition(".")
        target = __import__(owner, fromlist=[attribute])
        monkeypatch.setattr(target, attribute, getattr(target, attribute))
    monkeypatch.setattr(threading.Thread, "start", threading.Thread.start)
    monkeypatch.setattr(threading.Thread, "_bootstrap_inner", threading.Thread._bootstrap_inner)
    def install_with(no_autograd=True):
        record.install(shell, FINGERPRINT_SEED, FINGERPRINT_BITS, FINGERPRINT_WIDTH, FINGERPRINT_COLUMNS)
        module.install(no_autograd, record)

    module.install_with, module.shell, module.record, record.shell = install_with, shell, record, shell
    grad_mode = torch.is_grad_enabled()
    yield module
    if module.GUARD is not None:
        module.GUARD.uninstall()
    torch.set_grad_enabled(grad_mode)


def run_as(guard, filename: str, code: str, **names):
    """Run code as a notebook cell would: in the kernel's namespace, compiled from the cell's file."""
    guard.shell.user_ns.update(names)
    exec(compile(code, filename, "exec"), guard.shell.user_ns)


def calls(guard):
    return [(c["execution"], c["dynamic"], c["line"], c["api"], c["rule"]) for c in guard.after_cell()["calls"]]


def test_hidden_spellings_are_recorded_with_cell_and_line(guard):
    guard.install_with()
    x = torch.randn(3, 4)
    run_as(
        guard,
        CELL,
        "getattr(torch, bytes.fromhex('6c6f675f736f66746d6178').decode())(x, 1)\nx.softmax(1)\n"
        "torch.special.logsumexp(x, 1)\ntorch.nn.functional.relu(x)\n"
        "torch.nn.Linear(4, 2)(x)\ntorch.nn.functional.cross_entropy(x, torch.zeros(3, dtype=torch.long))\n"
        "torch.distributions.Categorical(logits=x).logits",
        x=x,
    )
    assert calls(guard) == [(5, False, 1, "torch.log_softmax", "ready-made"),
                            (5, False, 2, "torch.Tensor.softmax", "ready-made"),
                            (5, False, 3, "torch.special.logsumexp", "ready-made"),
                            (5, False, 4, "torch.nn.functional.relu", "torch-nn"),
                            (5, False, 5, "torch.nn", "torch-nn"),  # what torch.nn's modules call is charged to them
                            (5, False, 6, "torch.nn.functional.cross_entropy", "torch-nn"),
                            (5, False, 7, "torch.distributions", "ready-made")]


def test_code_made_at_run_time_is_dynamic(guard):
    guard.install_with()
    run_as(guard, CELL, "exec('torch.logsumexp(torch.ones(2, 2), 1)')")
    assert calls(guard) == [(None, True, 1, "torch.logsumexp", "ready-made")]


HONEST_HABITS = """
import copy, io, pickle
W = torch.randn(4, 3)
model = types.SimpleNamespace(layers=[types.SimpleNamespace(params={"W": W}, grads={})])
print(W, W[:2], repr(W), str(W[0]), f"{W.sum():.3f}", format(W.sum(), ".2f"), W.tolist(), W.numpy().shape, W.sum().item())
copy.deepcopy(model)
torch.save({"W": W}, io.BytesIO())
pickle.dumps(W)
torch.testing.assert_close(W, W.clone())
with torch.no_grad():
    W @ W.T
with torch.inference_mode():
    W @ W.T
torch.no_grad()(lambda: W.sum())()
torch.set_grad_enabled(False)
W.requires_grad_(False)
W.requires_grad = False
"""  # noqa: E501 (HTML, CSS or code, kept byte for byte)


def test_honest_habits_are_not_charged(guard):
    guard.install_with()
    run_as(guard, CELL, HONEST_HABITS, types=types)
    assert calls(guard) == []


def test_provided_code_library_code_and_allowed_calls_are_not_the_students(guard, tmp_path):
    guard.install_with()
    x = torch.randn(3, 4)
    library = tmp_path / "site-packages" / "somelib" / "helpers.py"
    library.parent.mkdir(parents=True)
    library.write_text("pass\n")
    run_as(guard, str(library), "torch.log_softmax(x, 1)", x=x)
    run_as(guard, "coursekit_probe", "torch.log_softmax(x, 1)", x=x)
    run_as(guard, CELL, "with torch.no_grad():\n    (x - x.max(1, keepdim=True).values).exp().sum(1).log()", x=x)
    run_as(guard, PROVIDED, "torch.log_softmax(x, 1)", x=x)
    assert calls(guard) == [(6, False, 1, "torch.log_softmax", "ready-made")]  # the grader drops provided cells


def test_the_graders_own_checks_are_not_charged_even_when_a_cell_runs_them(guard):
    """The runner runs `after_cell` as a silent cell: what the guard itself reads is not the student's."""
    guard.install_with()
    run_as(guard, CELL, "weights = torch.ones(3)\nreport = __coursekit_guard.after_cell(3, 4)", __coursekit_guard=guard)
    assert guard.shell.user_ns["report"]["calls"] == [] and calls(guard) == []


def test_the_standard_library_does_not_launder_a_call(guard):
    guard.install_with()
    code = ("import functools\nfrom concurrent.futures import ThreadPoolExecutor\nx = torch.randn(2, 3)\n"
            "functools.singledispatch(torch.log_softmax)(x, 1)\n"
            "thread = threading.Thread(target=torch.logsumexp, args=(x, 1))\nthread.start()\nthread.join()\n"
            "ThreadPoolExecutor(1).submit(torch.softmax, x, 1).result()")
    run_as(guard, CELL, code, threading=threading)
    assert [(line, api) for _, _, line, api, _ in calls(guard)] == [
        (4, "torch.log_softmax"), (6, "torch.logsumexp"), (8, "torch.softmax")]


def test_a_thread_starts_with_autograd_off_and_switching_it_on_is_charged(guard):
    guard.install_with()
    seen = []
    run_as(guard, CELL, "def job():\n    seen.append(torch.is_grad_enabled())\n    torch.set_grad_enabled(True)\n"
                        "worker = threading.Thread(target=job)\nworker.start()\nworker.join()",
           threading=threading, seen=seen)
    assert seen == [False]
    assert [(line, api) for _, _, line, api, _ in calls(guard)] == [(3, "torch.autograd")]


def test_autograd_follows_the_course_switch(guard):
    guard.install_with(no_autograd=False)
    with torch.enable_grad():  # whatever grad mode an earlier test left
        run_as(guard, CELL, "w = torch.zeros(2).requires_grad_(True)\n(w * 2).sum().backward()\nw.grad\n"
                            "torch.optim.SGD([w], lr=0.1).step()")
    assert calls(guard) == [(5, False, 4, "torch.optim", "torch-optim")]
    guard.GUARD.uninstall()
    guard.install_with()
    run_as(guard, CELL, "torch.set_grad_enabled(True)\nw = torch.zeros(2)\nw.requires_grad_(True)")
    assert [c[3] for c in calls(guard)] == ["torch.autograd", "torch.Tensor.requires_grad_"]
    assert guard.after_cell()["autograd"][0].startswith("grad mode is on")


def test_the_calls_record_the_students_functions_on_the_way(guard):
    guard.install_with()
    run_as(guard, CELL, "def helper(z):\n    return torch.log_softmax(z, 1)\n\nclass Loss:\n"
                        "    def forward(self, z):\n        return helper(z)\n\nLoss().forward(torch.ones(2, 2))")
    assert [c["within"] for c in guard.after_cell()["calls"]] == [["helper", "Loss"]]


@pytest.mark.parametrize("tamper", [
    "torch.log_softmax = torch._C._VariableFunctions.log_softmax",
    "__coursekit_guard.GUARD.check = lambda *args: None",
    "torch.log_softmax.__closure__[0].cell_contents = print",
    "__coursekit_guard.charged = lambda frame: (None, [], None)",
    "type(__coursekit_guard.GUARD).check = lambda *args: None",
])
def test_a_guard_that_was_changed_is_seen(guard, tamper):
    guard.install_with()
    assert guard.after_cell()["guard_active"] is True
    run_as(guard, CELL, tamper, __coursekit_guard=guard)
    assert guard.after_cell()["guard_active"] is False


def test_loading_tensors_is_recorded_for_review(guard, tmp_path):
    guard.install_with()
    torch.save({"W": torch.ones(2)}, tmp_path / "w.pt")
    run_as(guard, CELL, f"import torch\nfor _ in range(3):\n    weights = torch.load({str(tmp_path / 'w.pt')!r})")
    report = guard.after_cell()
    assert [(i["execution"], i["line"], i["api"]) for i in report["imports"]] == [
        (5, 3, "torch.load")
    ]  # once per line, not per call


def test_the_guards_report_reads_back_whole_as_the_protocols_guard_report(guard, tmp_path):
    """The runner reads `after_cell`'s repr with `GuardReport.from_json`: no record or field of the
    guard's is lost on the way (a renamed key would be)."""
    guard.install_with()
    torch.save(torch.ones(2), tmp_path / "w.pt")
    run_as(guard, CELL, f"def helper(x):\n    return torch.log_softmax(x, 1)\nhelper(torch.ones(2, 3))\n"
                        f"exec('torch.softmax(torch.ones(2), 0)')\ntorch.load({str(tmp_path / 'w.pt')!r})")
    raw = guard.after_cell(3, 5)
    report = GuardReport.from_json(ast.literal_eval(repr(raw)))
    assert report.guard_active and len(raw["calls"]) == 2 and len(raw["imports"]) == 1
    assert [record.to_json() for record in report.calls] == raw["calls"]
    assert [record.to_json() for record in report.imports] == [{**i, "rule": "", "within": []} for i in raw["imports"]]
    assert report.calls[0].within == ("helper",) and report.calls[1].dynamic


# Training records: a student's layers, trained in the ways students train.
LAYERS = '''
class Linear:
    def __init__(self, n_in, n_out):
        self.params = {"W": torch.randn(n_in, n_out) * 0.1, "b": torch.zeros(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads["W"], self.grads["b"] = self.x.T @ grad_out, grad_out.sum(0)
        return grad_out @ self.params["W"].T


class Model:
    def __init__(self):
        self.layers = [Linear(6, 1)]

    def forward(self, x):
        return self.layers[0].forward(x)

    def backward(self, grad_out):
        return self.layers[0].backward(grad_out)


def sgd_step(model, lr):
    for layer in model.layers:
        for key in layer.params:
            layer.params[key] -= lr * layer.grads[key]


def step(model, x, y):
    diff = model.forward(x).reshape(-1) - y
    model.backward((2 * diff / len(y)).reshape(-1, 1))


def train(model, x, y, lr, epochs, batch_size=8, seed=0, inline=False):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            step(model, x[batch], y[batch])
            if inline:
                for key in model.layers[0].params:
                    model.layers[0].params[key] -= lr * model.layers[0].grads[key]
            else:
                sgd_step(model, lr)
    return [0.0] * epochs
'''
X = torch.rand(24, 6)
Y = X @ torch.arange(6.0)


@pytest.fixture
def student(guard):
    """The kernel after the cell that defines the layers, train and sgd_step."""
    guard.install_with()
    run_as(guard, CELL, LAYERS, x=X, y=Y)
    guard.after_cell(12, 7)  # the runner: the cell run as execution 7 is the notebook's cell 12
    return guard.record


class Recorder:
    def __init__(self):
        self.meta, self.tensors = {}, {}

    def value(self, key, tensor):
        self.tensors[key] = tensor


def export(guard, *names):
    rec = Recorder()
    guard.export_training(guard.shell.user_ns, names, rec)
    return rec


def steps(rec, name):
    return rec.tensors[f"{name}.batch_sizes"].tolist(), rec.tensors[f"{name}.lr"].tolist()


def test_training_in_two_calls_is_recorded_batch_by_batch(student):
    run_as(student, CELL, "model = Model()\nfresh = [model.layers[0].params[k].clone() for k in ('W', 'b')]\n"
                          "train(model, x, y, 0.1, 2)\ntrain(model, x, y, lr=0.05, epochs=1, seed=4)")
    rec = export(student, "model")
    assert steps(rec, "model") == ([8] * 9, [0.1] * 6 + [0.05] * 3)
    assert [c["step"] for c in rec.meta["model"]["checkpoints"]] == [0, 6, 9]
    assert torch.equal(rec.tensors["model.checkpoint.0.0"], student.shell.user_ns["fresh"][0])
    assert len(rec.tensors["model.rows"]) == 72 and rec.meta["model"]["overflow"] is False


def test_updates_written_inside_train_take_its_learning_rate(student):
    run_as(student, CELL, "model = Model()\ntrain(model, x, y, 0.1, 1, inline=True)")
    assert steps(export(student, "model"), "model") == ([8, 8, 8], [0.1] * 3)


def test_an_own_loop_around_sgd_step_is_recorded_too(student):
    run_as(
        student,
        CELL,
        "model = Model()\nfor batch in torch.arange(24).split(12):\n    step(model, x[batch], y[batch])\n"
        "    sgd_step(model, 0.2)\nsgd_step(model, 0.1)",
    )
    assert steps(export(student, "model"), "model") == ([12, 12, -1], [0.2, 0.2, 0.1])  # the last gradients again


AUTOGRAD_TRAIN = """
def autograd_train(model, x, y, lr, epochs, batch_size=8, seed=0):
    torch.set_grad_enabled(True)
    generator = torch.Generator().manual_seed(seed)
    params = list(model.layers[0].params.values())
    for p in params:
        p.requires_grad_(True)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            ((model.forward(x[batch]).reshape(-1) - y[batch]) ** 2).mean().backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
                    p.grad = None
    return [0.0] * epochs
"""


def test_where_autograd_is_allowed_its_backward_stands_for_the_layers(guard):
    guard.install_with(no_autograd=False)
    run_as(guard, CELL, LAYERS + AUTOGRAD_TRAIN.replace("autograd_train", "train"), x=X, y=Y)
    guard.after_cell(12, 7)
    run_as(guard, CELL, "model = Model()\ntrain(model, x, y, 0.1, 1)")
    assert steps(export(guard.record, "model"), "model") == ([8, 8, 8], [0.1] * 3)


def test_an_update_with_gradients_no_backward_made_is_recorded_as_such(student):
    run_as(student, CELL, "model = Model()\nmodel.layers[0].grads = {'W': torch.ones(6, 1), 'b': torch.ones(1)}\n"
                          "sgd_step(model, 0.5)")
    assert steps(export(student, "model"), "model") == ([-2], [0.5])


def test_a_copy_kept_between_calls_is_found_in_the_record(student):
    run_as(
        student,
        CELL,
        "model = Model()\ntrain(model, x, y, 0.1, 1)\nbest = copy.deepcopy(model)\ntrain(model, x, y, 0.1, 1)",
        copy=copy,
    )
    rec = export(student, "best")
    assert [c["step"] for c in rec.meta["best"]["checkpoints"]] == [0, 3]


def test_weights_set_by_hand_have_no_record(student):
    run_as(student, CELL, "loaded = Model()\nloaded.layers[0].params['W'] = torch.ones(6, 1)")
    assert export(student, "loaded").meta["loaded"] == {"trained": False, "own_object_trained": False}


def test_weights_replaced_after_training_end_the_record(student):
    run_as(student, CELL, "model = Model()\ntrain(model, x, y, 0.1, 1)\nmodel.layers[0].params['W'] = torch.ones(6, 1)")
    rec = export(student, "model")
    assert [c["step"] for c in rec.meta["model"]["checkpoints"]] == [0, 3, 3]  # a change that no update made
    assert torch.equal(rec.tensors["model.checkpoint.2.0"], torch.ones(6, 1))


def test_a_cell_that_defines_train_or_a_class_follows_it_at_once(student):
    (transformer,) = student.shell.ast_transformers
    import ast
    tree = transformer.visit(ast.parse("def train(model):\n    pass\nclass Layer:\n    pass\nx = 1"))
    assert [ast.unparse(node) for node in tree.body[1::2]] == [
        "train = __coursekit_record.follow('train', train)", "__coursekit_record.watch_class(Layer)"]


def test_a_recording_failure_never_breaks_the_students_call(student):
    run_as(student, CELL, "sgd_step(types.SimpleNamespace(layers=[]), 0.1)", types=types)
    assert student.INCOMPLETE[0] is False
    student.weighed = None  # a part of the recording breaks
    run_as(student, CELL, "model = Model()\ntrain(model, x, y, 0.1, 1)")
    assert student.INCOMPLETE[0] is True and export(student, "model").meta["model"]["overflow"] is True


@pytest.mark.parametrize("training", [
    "train(model, x, y, 0.1, 5)",
    "train(model, x, y, 0.1, 5, inline=True)",
    "for batch in torch.arange(24).repeat(4).split(8):\n    step(model, x[batch], y[batch])\n    sgd_step(model, 0.1)",
])
def test_the_grader_retrains_every_way_of_updating_from_the_record(student, training):
    from coursekit.grading.retrain import RowIndex, read_record, verify

    student.CHECKPOINT_EVERY = 4  # many checkpoints, some inside a train call
    run_as(student, CELL, "model = Model()\n" + training)
    rec = export(student, "model")
    output = types.SimpleNamespace(meta=rec.meta, tensors=rec.tensors)
    record = read_record(output, "model", [(6, 1), (1,)])
    verdict = verify(record, RowIndex(X, torch.rand(5, 6)), X, Y, False, lambda params: None, None)
    assert verdict.outcome == "confirmed" and verdict.difference < 1e-5, verdict


def test_row_fingerprints_are_the_graders(student):
    from coursekit.grading.retrain import fingerprints, row_weights

    assert torch.equal(student.fingerprints(X), fingerprints(X, row_weights()))


@pytest.mark.parametrize("inline", [False, True])
def test_recording_keeps_no_tensor_per_step(student, inline):
    """Thousands of small tensors kept between training's temporaries fragment the heap (an honest
    kernel once grew past its 4 GiB data limit): the rows of every step share one buffer."""
    import gc

    def tensors_alive():
        gc.collect()
        return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())

    run_as(student, CELL, f"model = Model()\ntrain(model, x, y, 0.1, 1, batch_size=1, inline={inline})")
    before = tensors_alive()
    run_as(student, CELL, f"train(model, x, y, 0.1, 40, batch_size=1, inline={inline})")
    assert tensors_alive() - before < 20
    sizes, _ = steps(export(student, "model"), "model")
    assert sizes == [1] * 24 * 41


def test_recorded_batches_give_each_batch_its_own_fingerprints(student):
    """Fingerprints go into one buffer: any mix of sizes, widths and codes, taken one by one or in bulk,
    gives what fingerprinting each batch alone gives."""
    batches = [torch.rand(16, 6), student.REUSED, torch.rand(3, 2, 3), torch.rand(200, 6), torch.rand(1, 4),
               torch.rand(7, 4).double(), student.NO_BACKWARD, torch.rand(5, 6)[:, ::2], torch.rand(128, 6)]
    expected, sizes = [], []
    for batch in batches:
        is_rows = isinstance(batch, torch.Tensor)
        expected += [student.fingerprints(batch)] if is_rows else []
        sizes.append(len(batch) if is_rows else batch)
    one_by_one, in_call, bulk = student.Batches(), student.CallBatches(), student.Batches()
    for batch in batches:
        in_call.add(torch.rand(2, 6))  # a batch no update used
        in_call.add(batch)
        one_by_one.take_last(in_call)
        bulk.add(batch)
    everything = student.Batches()
    everything.extend(bulk, len(bulk))
    for recorded in (one_by_one, bulk, everything):
        recorded_sizes, rows = recorded.prefix(len(batches))
        assert recorded_sizes == sizes and torch.equal(rows, torch.cat(expected))
    assert torch.equal(bulk.prefix(4)[1], torch.cat(expected[:3]))


@pytest.mark.parametrize("width", [FINGERPRINT_WIDTH, 2 * FINGERPRINT_COLUMNS - 1, 7])
def test_fingerprints_are_exact_and_the_graders(student, width):
    """The kernel's fingerprint of a row is the exact integer sum of its float32 bits (every k-th of a wide
    row) times the weights (float64 cannot round it), and the grader's: rows with the largest bits, both
    signs, at the widest row and at the width that sums the most values."""
    from coursekit.grading.retrain import fingerprints, row_weights
    extremes = torch.tensor([-0.0, float("nan"), -float("nan"), float("inf"), -3.4e38, 3.4e38]).view(torch.int32)
    bits = torch.full((4, width), -2 ** 31, dtype=torch.int32)  # the largest magnitude
    bits[1] = 2 ** 31 - 1
    bits[2, :6] = extremes[:width]
    bits[3] = torch.randint(-2 ** 31, 2 ** 31 - 1, (width,), dtype=torch.int32)
    rows = bits.view(torch.float32)
    weights = [int(w) for w in row_weights().tolist()]
    taken = bits[:, ::max(1, width // FINGERPRINT_COLUMNS)]
    exact = [sum(int(b) * w for b, w in zip(row.tolist(), weights)) for row in taken]
    staged = student.Batches()  # the kernel's way: into its buffer of fingerprints
    staged.add(rows)
    assert student.fingerprints(rows).tolist() == exact == fingerprints(rows, row_weights()).tolist()
    assert staged.prefix(1)[1].tolist() == exact


def test_a_batch_changed_in_place_before_its_update_is_unknown(student):
    """A train call's last batch is kept as it is until the update takes it: if it changed in place
    meanwhile, its rows are unknown (for review), not the changed ones; inference tensors count no versions."""
    changed, recorded = torch.rand(4, 6), student.Batches()
    with torch.inference_mode():
        unversioned = torch.rand(3, 6)
    for batch in (changed, unversioned):
        in_call = student.CallBatches()
        in_call.add(batch)
        if batch is changed:
            batch.add_(1)
        recorded.take_last(in_call)
    sizes, rows = recorded.prefix(2)
    assert sizes == [student.UNKNOWN, 3] and torch.equal(rows, student.fingerprints(unversioned))


def test_a_reused_batch_buffer_is_recorded_exactly(student):
    """A batch is fingerprinted when its update takes it: a buffer the student fills again for every step
    (`copy_`) is recorded step by step, as it was at each update."""
    run_as(student, CELL, "model = Model()\nbuffer = torch.empty(8, 6)\n"
                          "for batch in torch.arange(24).split(8):\n    buffer.copy_(x[batch])\n"
                          "    step(model, buffer, y[batch])\n    sgd_step(model, 0.1)\n")
    rec = export(student, "model")
    assert steps(rec, "model")[0] == [8, 8, 8]
    assert torch.equal(rec.tensors["model.rows"], student.fingerprints(X))
