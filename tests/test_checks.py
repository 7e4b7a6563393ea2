"""The trusted checks that decide the points, on probe exports made without a sandbox.

A reference solution (plain torch, written here) is run through the real in-sandbox probes
(coursekit/in_sandbox/probes.py) on `make_inputs(seed)`, and their exports go through safetensors and
JSON as in a grading run. A perfect set earns every part; each single corruption costs exactly one
part, by an exact fraction, with the sentence the student reads."""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load, save

from conftest import ROOT
from coursekit.config import Floors
from coursekit.grading.checks import CHECKS, Context, run_check
from coursekit.grading.probe_data import PROBE_NAMES, ProbeOutput, make_inputs

LOGISTIC_FLOOR, MLP_FLOOR = Floors().logistic_accuracy, Floors().mlp_accuracy


def load_sandbox_probe():
    spec = importlib.util.spec_from_file_location("sandbox_probe_under_test", ROOT / "coursekit" / "in_sandbox" / "probes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANDBOX_PROBE = load_sandbox_probe()

# What a student's notebook defines: run as `__main__`, like the notebook's own cells.
REFERENCE = '''
import torch


class Linear:
    def __init__(self, n_in, n_out):
        self.params = {"W": torch.randn(n_in, n_out) * (2 / n_in) ** 0.5, "b": torch.zeros(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads = {"W": self.x.T @ grad_out, "b": grad_out.sum(0)}
        return grad_out @ self.params["W"].T


class ReLU:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.mask = x > 0
        return torch.where(self.mask, x, torch.zeros_like(x))

    def backward(self, grad_out):
        return torch.where(self.mask, grad_out, torch.zeros_like(grad_out))


class Sequential:
    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out


def log_softmax(logits):
    shifted = logits - logits.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


class MSELoss:
    def forward(self, pred, target):
        self.shape, self.diff = pred.shape, pred.reshape(-1) - target
        return (self.diff ** 2).mean()

    def backward(self):
        return (2 * self.diff / self.diff.numel()).reshape(self.shape)


class CrossEntropyLoss:
    def forward(self, logits, target):
        self.logits, self.target = logits, target
        return -log_softmax(logits)[torch.arange(len(target)), target].mean()

    def backward(self):
        n, c = self.logits.shape
        return (log_softmax(self.logits).exp() - torch.eye(c)[self.target]) / n


def sgd_step(model, lr):
    for layer in model.layers:
        for key in layer.params:
            layer.params[key] -= lr * layer.grads[key]


def train(model, loss_fn, x, y, lr, epochs, batch_size, seed):
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            model.backward(loss_fn.backward())
            sgd_step(model, lr)
            total += float(loss) * len(batch)
        losses.append(total / len(x))
    return losses


def accuracy(logits, y):
    return float((logits.argmax(dim=1) == y).float().mean())
'''

# The grader's test subset, made up: the label is in the pixels (one-hot in the first ten), with
# noise in the rest; 20 images per digit.
N = 200
G = torch.Generator().manual_seed(1234)
Y = torch.arange(N) % 10
X = torch.cat([torch.eye(10)[Y], torch.rand(N, 784 - 10, generator=G)], dim=1)


def reader(rows: dict[int, int], n_out: int) -> torch.Tensor:
    """A (784, n_out) weight sending pixel i to output rows[i]."""
    W = torch.zeros(784, n_out)
    for pixel, column in rows.items():
        W[pixel, column] = 1.0
    return W


IDENTITY = {i: i for i in range(10)}


def trained_models(ns):
    """Weights as training would leave them: the regression reads the digit (MSE 0); the logistic
    model mistakes every 9 for an 8 (accuracy 0.9); the MLP reads every digit (accuracy 1.0)."""
    regression = ns["Sequential"](ns["Linear"](784, 1))
    regression.layers[0].params.update(W=reader({i: 0 for i in range(10)}, 1) * torch.arange(784.0).reshape(-1, 1),
                                       b=torch.zeros(1))
    logistic = ns["Sequential"](ns["Linear"](784, 10))
    logistic.layers[0].params.update(W=reader({**IDENTITY, 9: 8}, 10), b=torch.zeros(10))
    mlp = ns["Sequential"](ns["Linear"](784, 30), ns["ReLU"](), ns["Linear"](30, 10))
    mlp.layers[0].params.update(W=reader(IDENTITY, 30), b=torch.zeros(30))
    mlp.layers[2].params.update(W=torch.eye(30, 10), b=torch.zeros(10))
    return {"regression_model": regression, "logistic_model": logistic, "mlp_model": mlp}


def student_namespace() -> dict:
    ns = {"__name__": "__main__"}
    exec(compile(REFERENCE, "<reference solution>", "exec"), ns)
    ns.update(trained_models(ns))
    return ns


HONEST = {"trained": True, "events": 2, "train_calls": 2, "changed_after": False, "began_in": 47,
          "replaced_in": None, "replay_difference": 0.0, "replay_scale": 1.0}


def provenance_output() -> ProbeOutput:
    """What the instrumentation reports for models trained from a fresh start (small random weights;
    zeros for the regression, whose untrained MSE is the targets' mean square)."""
    g = torch.Generator().manual_seed(7)
    starts = {"regression_model": [torch.zeros(784, 1), torch.zeros(1)],
              "logistic_model": [torch.randn(784, 10, generator=g) * 0.01, torch.zeros(10)],
              "mlp_model": [torch.randn(784, 30, generator=g) * 0.01, torch.zeros(30),
                            torch.randn(30, 10, generator=g) * 0.01, torch.zeros(10)]}
    tensors = {f"{name}.start.{i}": t for name, start in starts.items() for i, t in enumerate(start)}
    return ProbeOutput(tensors, {name: dict(HONEST) for name in starts})


def exported(rec) -> ProbeOutput:
    """Through the same formats as a real export: safetensors and JSON."""
    meta = json.loads(json.dumps(rec.meta))
    return ProbeOutput(load(save(rec.tensors)), meta, error=meta.get("error"))


@functools.cache
def perfect_outputs(seed: int) -> dict[str, ProbeOutput]:
    torch.manual_seed(seed)  # the reference Linear's initialisation
    inputs, ns, outputs = make_inputs(seed), student_namespace(), {}
    for name in PROBE_NAMES:
        if name == "provenance":
            continue
        rec = SANDBOX_PROBE.Recorder()
        with torch.inference_mode():
            SANDBOX_PROBE.PROBES[name](ns, inputs, rec)
        outputs[name] = exported(rec)
    outputs["provenance"] = provenance_output()
    return outputs


def context(seed: int, outputs: dict[str, ProbeOutput] | None = None) -> Context:
    return Context(outputs if outputs is not None else copy.deepcopy(perfect_outputs(seed)), make_inputs(seed), X, Y, X, Y)


def fractions(ctx: Context) -> dict[str, float]:
    return {grade_id: run_check(grade_id, ctx).fraction for grade_id in CHECKS}


def failures(ctx: Context, grade_id: str) -> list[str]:
    return [line.sentence for line in run_check(grade_id, ctx).lines if not line.passed]


def test_the_probes_cover_every_contract_name_and_the_checks_every_probe():
    assert set(SANDBOX_PROBE.PROBES) == set(PROBE_NAMES)
    names = {name for check in CHECKS.values() for name in check.names}
    assert names == set(SANDBOX_PROBE.CONTRACT_NAMES + SANDBOX_PROBE.MODELS)


def test_the_made_up_test_subset_sits_where_the_model_checks_need_it():
    ctx = context(0)
    forward = {name: (lambda x, m=m: m.forward(x)) for name, m in trained_models(student_namespace()).items()}
    assert float((forward["logistic_model"](X).argmax(1) == Y).double().mean()) == 0.9 >= LOGISTIC_FLOOR
    assert float((forward["mlp_model"](X).argmax(1) == Y).double().mean()) == 1.0 >= MLP_FLOOR
    assert float((forward["regression_model"](X).reshape(-1) - Y).pow(2).mean()) == 0.0
    assert ctx.outputs["names"].meta["accuracy"] == {"defined": True, "module": "__main__", "kind": "function"}


@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_a_perfect_submission_earns_every_part(seed):
    ctx = context(seed)
    for grade_id in CHECKS:
        outcome = run_check(grade_id, ctx)
        assert outcome.fraction == 1.0, (grade_id, [line.sentence for line in outcome.lines if not line.passed])
        assert outcome.lines and all(line.passed for line in outcome.lines), grade_id


# Each corruption: (what it does to the exports, the part it costs, that part's fraction, a sentence
# the student reads). Every other part keeps all its points.

def nudge(probe, key, index, by):
    def corrupt(outputs, inputs):
        outputs[probe].tensors[key][index] += by
    return corrupt


def replace_tensor(probe, key, make):
    def corrupt(outputs, inputs):
        old = outputs[probe].tensors[key]
        outputs[probe].tensors[key] = new = make(old)
        outputs[probe].meta[key].update(shape=list(new.shape), dtype=str(new.dtype).replace("torch.", ""))
    return corrupt


def raised(probe, key, error, where=""):
    def corrupt(outputs, inputs):
        outputs[probe].tensors.pop(key, None)
        outputs[probe].meta[key] = {"error": error, "where": where}
    return corrupt


def meta(probe, key, **changes):
    def corrupt(outputs, inputs):
        outputs[probe].meta[key] = {**outputs[probe].meta[key], **changes}
    return corrupt


def missing(probe, why):
    def corrupt(outputs, inputs):
        outputs[probe] = ProbeOutput(error=why)
    return corrupt


def losses(run, change):
    def corrupt(outputs, inputs):
        outputs["train"].tensors[f"{run}.losses"] = change(outputs["train"].tensors[f"{run}.losses"])
    return corrupt


def both(*corruptions):
    def corrupt(outputs, inputs):
        for one in corruptions:
            one(outputs, inputs)
    return corrupt


def model_weight(name, position, W):
    def corrupt(outputs, inputs):
        outputs["models"].tensors[f"{name}.{position}.params.W"] = W
    return corrupt


CORRUPTIONS = {
    "linear forward off by 1e-2": (
        nudge("linear", "forward", (1, 0), 1e-2), "test_linear", 3 / 4,
        "forward(x) returns x @ W + b: differs from the expected value by up to 0.01 (at index (1, 0))"),
    "linear grads['b'] just outside the tolerance": (
        nudge("linear", "grads.b", (0,), 3e-3), "test_linear", 3 / 4,
        "backward fills grads['b'] = grad_out summed over the batch: differs"),
    "linear init W of the wrong shape": (
        replace_tensor("linear", "init.params.W", lambda W: W.T.contiguous()), "test_linear", 4 / 5,
        "params['W'] has shape"),
    "relu forward flattened": (
        replace_tensor("relu", "forward", lambda t: t.reshape(-1)), "test_relu", 2 / 3,
        "forward(x) returns max(x, 0): shape ("),
    "relu params not a dict": (
        lambda outputs, inputs: outputs["relu"].meta.update(params={"type": "builtins.list", "length": 0}),
        "test_relu", 2 / 3, "ReLU().params is an empty dict: got builtins.list"),
    "sequential layers a tuple": (
        meta("sequential", "layers", type="tuple"), "test_sequential", 4 / 5,
        "Sequential(a, b, c).layers is a list of the 3 layers: got tuple of length 3"),
    "sgd_step W as an int tensor": (
        replace_tensor("sgd_step", "W", lambda t: t.round().long()), "test_sgd_step", 1 / 2,
        "updates params['W'] -= lr * grads['W'] in place: dtype torch.int64, expected floating point"),
    "log_softmax raises on large logits": (
        raised("log_softmax", "large", "ValueError: too large", "line 3: raise ValueError('too large')"),
        "test_log_softmax", 1 / 2, "raised ValueError: too large (line 3: raise ValueError('too large'))"),
    "log_softmax returns a list": (
        meta("log_softmax", "small", type="builtins.list"), "test_log_softmax", 1 / 2,
        "returned a builtins.list, expected a torch.Tensor"),
    "cross-entropy backward with a nan": (
        nudge("cross_entropy_loss", "random.backward", (0, 0), math.nan), "test_cross_entropy_loss", 3 / 4,
        "backward() returns (softmax - onehot) / N: contains inf or nan"),
    "cross-entropy of zeros with an inf": (
        replace_tensor("cross_entropy_loss", "zeros.forward", lambda t: torch.tensor(math.inf)),
        "test_cross_entropy_loss", 3 / 4, "all-zero logits give ln(10): contains inf or nan"),
    "the mse_loss probe did not run": (
        missing("mse_loss", "the probe did not run (the notebook did not finish)"), "test_mse_loss", 0.0,
        "is the mean squared error, a 0-dim tensor: the probe did not run (the notebook did not finish)"),
    "mse forward not 0-dim": (
        replace_tensor("mse_loss", "flat.forward", lambda t: t.reshape(1)), "test_mse_loss", 3 / 4,
        "shape (1,), expected ()"),
    "accuracy returns a numpy float": (
        meta("accuracy", "value", type="numpy.float64", value=None), "test_accuracy", 0.0,
        "returns a Python float: got numpy.float64"),
    "accuracy is off": (
        lambda outputs, inputs: outputs["accuracy"].meta["value"].update(value=outputs["accuracy"].meta["value"]["value"] + 0.01),
        "test_accuracy", 1 / 2, "accuracy(logits, y) is the fraction of rows whose argmax is y: got "),
    "accuracy is fastai's": (
        meta("names", "accuracy", module="fastai.metrics"), "test_accuracy", 0.0,
        "`accuracy` is defined in the notebook: it comes from fastai.metrics, not from your code"),
    "sgd_step is not defined": (
        meta("names", "sgd_step", defined=False, module=None), "test_sgd_step", 0.0,
        "`sgd_step` is defined: it is not defined in the notebook"),
    "train losses do not go down": (
        both(losses("first", lambda t: t.flip(0)), losses("again", lambda t: t.flip(0))), "test_train", 5 / 6,
        "the loss goes down over the epochs: losses ["),
    "train gives other losses for the same seed": (
        losses("again", lambda t: t + 1e-9), "test_train", 5 / 6, "the same seed gives the same losses"),
    "train ignores its seed": (
        lambda outputs, inputs: outputs["train"].tensors.update({"other_seed.losses": outputs["train"].tensors["first.losses"].clone()}),
        "test_train", 5 / 6, "another seed shuffles differently"),
    "train returns numpy floats": (
        meta("train", "first.losses", item_types=["numpy.float64"]), "test_train", 5 / 6,
        "the losses are Python floats: got ['numpy.float64']"),
    "train does not change the parameters": (
        lambda outputs, inputs: outputs["train"].tensors.update({"first.W": torch.zeros(5, 1), "first.b": torch.zeros(1)}),
        "test_train", 5 / 6, "training the model's parameters halves the loss on the training data"),
    "train returns 3 losses for 4 epochs": (
        meta("train", "first.losses", length=3), "test_train", 0.0, "one loss per epoch: got builtins.list of length 3"),
    "train leaves params of another shape": (
        lambda outputs, inputs: outputs["train"].tensors.update({"first.W": torch.zeros(1, 5)}), "test_train", 5 / 6,
        "halves the loss on the training data: after train, params['W'] has shape (1, 5) and params['b'] (1,), "
        "expected (5, 1) and (1,)"),
    "train's losses forged as a matrix": (
        losses("first", lambda t: t.reshape(2, 2)), "test_train", 2 / 3, "the losses are finite numbers"),
    "a forged description that is not an object": (
        lambda outputs, inputs: outputs["linear"].meta.update(forward=[1]), "test_linear", 3 / 4,
        "forward(x) returns x @ W + b: its description in the probe's export is malformed"),
    "a forged replay difference": (
        lambda outputs, inputs: outputs["provenance"].meta["mlp_model"].update(replay_difference="0"), "test_mlp", 0.0,
        "training it again from the same start with the same settings gave other parameters (off by up to inf)"),
    "a forged provenance start of another shape": (
        lambda outputs, inputs: outputs["provenance"].tensors.update({"logistic_model.start.0": torch.zeros(3, 3)}),
        "test_logistic", 0.0, "the grader could not check this part: what your code returned could not be read"),
    "regression predicts 2 more than the digit": (
        lambda outputs, inputs: outputs["models"].tensors.update({"regression_model.0.params.b": torch.tensor([2.01])}),
        "test_regression", 0.0, "(at most 4.0)"),
    "logistic below its floor": (
        model_weight("logistic_model", 0, reader({**IDENTITY, 9: 8, 8: 7}, 10)), "test_logistic", 0.0,
        "test accuracy recomputed by the grader is 0.8000 (at least 0.87)"),
    "mlp does not beat logistic": (
        model_weight("logistic_model", 0, reader(IDENTITY, 10)), "test_mlp", 1 / 2,
        "it beats logistic_model (1.0000)"),
    "mlp below its floor": (
        model_weight("mlp_model", 0, reader({**IDENTITY, 9: 8, 8: 7}, 30)), "test_mlp", 0.0,
        "test accuracy recomputed by the grader is 0.8000 (at least 0.9)"),
    "mlp without its ReLU": (
        lambda outputs, inputs: outputs["models"].meta.update(mlp_model={"layers": ["Linear", "Linear"]}),
        "test_mlp", 0.0, "`mlp_model` is Sequential(Linear, ReLU, Linear): its layers are ['Linear', 'Linear']"),
    "mlp's weights not a tensor": (
        meta("models", "mlp_model.2.params.W", type="numpy.ndarray"), "test_mlp", 0.0,
        "layer 2 params['W'] has shape (30, 10): returned a numpy.ndarray, expected a torch.Tensor"),
    "logistic weights set by hand": (
        lambda outputs, inputs: outputs["provenance"].meta.update(logistic_model={"trained": False, "own_object_trained": False}),
        "test_logistic", 0.0, "weights loaded from a file or set by hand earn no points"),
    "regression training not traced": (
        lambda outputs, inputs: outputs["provenance"].meta.pop("regression_model"), "test_regression", 0.0,
        "its training was not traced"),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_one_corruption_costs_one_part(name):
    corrupt, grade_id, fraction, sentence = CORRUPTIONS[name]
    ctx = context(1)
    corrupt(ctx.outputs, ctx.inputs)
    outcomes = {g: run_check(g, ctx) for g in CHECKS}
    assert outcomes[grade_id].fraction == pytest.approx(fraction, abs=1e-12)
    assert {g: o.fraction for g, o in outcomes.items() if g != grade_id} == {g: 1.0 for g in CHECKS if g != grade_id}
    failed = [line.sentence for line in outcomes[grade_id].lines if not line.passed]
    assert any(sentence in line for line in failed), failed


def test_without_the_names_probe_nothing_earns_points():
    ctx = context(0)
    ctx.outputs.pop("names")
    assert set(fractions(ctx).values()) == {0.0}
    assert failures(ctx, "test_linear") == ["`Linear` is defined: it is not defined in the notebook"]


def test_an_error_of_the_whole_probe_is_what_the_student_reads():
    ctx = context(0)
    ctx.outputs["relu"] = ProbeOutput(meta={"error": "NameError: name 'ReLU' is not defined"},
                                      error="NameError: name 'ReLU' is not defined")
    assert fractions(ctx)["test_relu"] == 0.0
    assert "forward(x) returns max(x, 0): NameError: name 'ReLU' is not defined" in failures(ctx, "test_relu")


def test_the_tolerance_is_absolute_plus_relative():
    ctx = context(0)
    forward = ctx.outputs["linear"].tensors["forward"]
    expected = (ctx.inputs["lin.x"].double() @ ctx.inputs["lin.W"].double() + ctx.inputs["lin.b"].double())
    forward[0, 0] = float(expected[0, 0]) + 0.9 * (1e-4 + 1e-4 * abs(float(expected[0, 0])))
    assert fractions(ctx)["test_linear"] == 1.0
    forward[0, 0] = float(expected[0, 0]) + 1.1 * (1e-4 + 1e-4 * abs(float(expected[0, 0]))) + 1e-6
    assert fractions(ctx)["test_linear"] == 3 / 4


def test_log_softmax_of_large_logits_has_a_looser_absolute_tolerance():
    ctx = context(0)
    top = int(ctx.inputs["ls.large"][0].argmax())  # where the answer is 0, so only the absolute part counts
    ctx.outputs["log_softmax"].tensors["large"][0, top] += 0.04
    assert fractions(ctx)["test_log_softmax"] == 1.0
    ctx.outputs["log_softmax"].tensors["large"][0, top] += 0.02
    assert fractions(ctx)["test_log_softmax"] == 1 / 2


def test_the_course_bars_are_inclusive():
    ctx = context(0)
    ctx.outputs["models"].tensors["regression_model.0.params.b"] = torch.tensor([2.0])  # MSE exactly 4
    outcome = run_check("test_regression", ctx)
    assert outcome.fraction == 1.0 and "test MSE recomputed by the grader is 4.000 (at most 4.0)" in outcome.lines[0].sentence
    ctx.outputs["models"].tensors["regression_model.0.params.b"] = torch.tensor([2.001])
    assert run_check("test_regression", ctx).fraction == 0.0
