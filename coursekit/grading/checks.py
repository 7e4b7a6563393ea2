"""Trusted checks, one per autograded grade_id: the grader's own reference (torch's, in float64)
compared with what the student's code returned on the grader's inputs, and metrics recomputed
from the exported parameters on the grader's own copy of the test subset."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, cast

import torch

from coursekit.config import Floors
from coursekit.grading.probe_data import ProbeOutput
from coursekit.grading.retrain import Params, RowIndex, difference, read_record, verify

logger = logging.getLogger(__name__)

# Provenance: an untrained classifier's training cross-entropy is within CHANCE_MARGIN of ln 10 (He
# initialisation gives about 2.47; a trained one is below 0.5). An untrained regression does no better
# than UNTRAINED_MSE_SHARE of the targets' variance (a fresh one is near their mean square, about 28;
# a trained one about 3). The train probe's SGD must match the grader's to TRAIN_SGD_RTOL.
CHANCE_MARGIN = 0.5
UNTRAINED_MSE_SHARE = 0.75
TRAIN_SGD_RTOL = 1e-5


@dataclass(frozen=True)
class CheckLine:
    """One sub-check's result: what was checked (and why it failed), and the value it measured."""

    passed: bool
    sentence: str
    measured: float | None = None
    condition: bool = False  # earns nothing, but its failure costs the whole part
    review: bool = False     # inconclusive: it costs nothing, and a person looks at it


@dataclass
class Outcome:
    """The sub-checks of one graded part, in the order they ran."""

    lines: list[CheckLine] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        if any(not line.passed for line in self.lines if line.condition):
            return 0.0
        scored = [line.passed for line in self.lines if not line.condition]
        return sum(scored) / len(scored) if scored else 0.0


class Checker:
    """Helpers that turn one probe's export into sub-check lines."""

    def __init__(self, output: ProbeOutput, outcome: Outcome):
        self.output, self.outcome = output, outcome

    def expect(self, ok: bool, sentence: str, why: str = "", measured: float | None = None,
               condition: bool = False) -> bool:
        self.outcome.lines.append(CheckLine(bool(ok), sentence if ok or not why else f"{sentence}: {why}",
                                            measured, condition))
        return bool(ok)

    def problem(self, key: str) -> str | None:
        """Why `key` has no usable tensor, or None."""
        entry = self.output.meta.get(key)
        if entry is None:
            return self.output.error or "this step did not run"
        if not isinstance(entry, dict):
            return "its description in the probe's export is malformed"
        if "error" in entry:
            return f"raised {entry['error']}" + (f" ({entry['where']})" if entry.get("where") else "")
        if entry.get("type") != "torch.Tensor":
            return f"returned a {entry.get('type')}, expected a torch.Tensor"
        if key not in self.output.tensors:
            return "no tensor was exported"
        return None

    def tensor(self, key: str, sentence: str, shape: tuple | None = None) -> torch.Tensor | None:
        why = self.problem(key)
        if why:
            self.expect(False, sentence, why)
            return None
        value = self.output.tensors[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.expect(False, sentence, f"shape {tuple(value.shape)}, expected {tuple(shape)}")
            return None
        if not value.is_floating_point():
            self.expect(False, sentence, f"dtype {value.dtype}, expected floating point")
            return None
        return value.double()

    def close(self, key: str, expected: torch.Tensor, sentence: str, atol=1e-4, rtol=1e-4) -> bool:
        value = self.tensor(key, sentence, tuple(expected.shape))
        if value is None:
            return False
        if not torch.isfinite(value).all():
            return self.expect(False, sentence, "contains inf or nan")
        difference = (value - expected).abs()
        ok = bool((difference <= atol + rtol * expected.abs()).all())
        where = tuple(int(i) for i in torch.nonzero(difference == difference.max())[0]) if difference.numel() else ()
        return self.expect(
            ok, sentence, f"differs from the expected value by up to {difference.max():.3g} (at index {where})"
        )

    def meta(self, key: str) -> dict:
        value = self.output.meta.get(key)
        return value if isinstance(value, dict) else {}

    def require(self, ok: bool, sentence: str, why: str = "", measured: float | None = None) -> bool:
        """A condition of the whole part: it earns nothing, and its failure costs all of it."""
        return self.expect(ok, sentence, why, measured, condition=True)

    def review(self, sentence: str, why: str) -> None:
        """Inconclusive evidence: the part keeps its points, and a person decides."""
        self.outcome.lines.append(CheckLine(True, f"{sentence}: not confirmed, because {why}; a person will "
                                                  "look at it, and your points stand until then", condition=True,
                                            review=True))


@dataclass
class Context:
    outputs: dict[str, ProbeOutput]
    inputs: dict[str, torch.Tensor]
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train: torch.Tensor
    y_train: torch.Tensor
    floors: Floors = Floors()
    index: RowIndex | None = None  # the training and test images by fingerprint (built on first use)
    passing: dict[str, bool] = field(default_factory=dict)  # building block -> passes all its checks

    def checker(self, probe: str, outcome: Outcome) -> Checker:
        return Checker(self.outputs.get(probe) or ProbeOutput(error="the probe did not run"), outcome)

    @property
    def rows(self) -> RowIndex:
        if self.index is None:
            self.index = RowIndex(self.x_train, self.x_test)
        return self.index


def names_defined(ctx: Context, outcome: Outcome, *names: str) -> bool:
    """Each name must be defined in the notebook itself (fastai's star import brings its own
    `accuracy` and `sgd_step`, for instance)."""
    checker = ctx.checker("names", outcome)
    ok = True
    for name in names:
        entry = checker.meta(name)
        if not entry.get("defined"):
            ok = checker.expect(False, f"`{name}` is defined", "it is not defined in the notebook")
        elif entry.get("module") != "__main__":
            ok = checker.expect(False, f"`{name}` is defined in the notebook",
                                f"it comes from {entry.get('module')}, not from your code")
    return ok


def check_linear(ctx, outcome):
    c = ctx.checker("linear", outcome)
    x, W, b, g = (ctx.inputs[f"lin.{k}"].double() for k in "xWbg")
    n_in, n_out = W.shape
    c.tensor("init.params.W", f"Linear({n_in}, {n_out}).params['W'] has shape ({n_in}, {n_out})", (n_in, n_out))
    c.tensor("init.params.b", f"Linear({n_in}, {n_out}).params['b'] has shape ({n_out},)", (n_out,))
    c.close("forward", x @ W + b, "forward(x) returns x @ W + b")
    c.close("backward", g @ W.T, "backward(grad_out) returns the gradient with respect to x")
    c.close("grads.W", x.T @ g, "backward fills grads['W'], the loss's gradient with respect to W")
    c.close("grads.b", g.sum(0), "backward fills grads['b'], the loss's gradient with respect to b")


def check_relu(ctx, outcome):
    c = ctx.checker("relu", outcome)
    x, g = ctx.inputs["relu.x"].double(), ctx.inputs["relu.g"].double()
    params = c.meta("params")
    c.expect(params.get("type") == "builtins.dict" and params.get("keys") == [], "ReLU().params is an empty dict",
             f"got {params.get('error') or params.get('type')} with keys {params.get('keys')}")
    c.close("forward", x.clamp(min=0), "forward(x) returns max(x, 0)")
    c.close("backward", g * (x > 0), "backward(grad_out) passes the gradient only where x > 0")


def check_sequential(ctx, outcome):
    c = ctx.checker("sequential", outcome)
    x, g = ctx.inputs["seq.x"].double(), ctx.inputs["seq.g"].double()
    W1, b1, W2, b2 = (ctx.inputs[f"seq.{k}"].double() for k in ("W1", "b1", "W2", "b2"))
    layers = c.meta("layers")
    c.expect(
        layers.get("type") == "list" and layers.get("length") == 3,
        "Sequential(a, b, c).layers is a list of the 3 layers",
        f"got {layers.get('type')} of length {layers.get('length')}",
    )
    hidden = x @ W1 + b1
    c.close("forward", hidden.clamp(min=0) @ W2 + b2, "forward runs the layers in order")
    grad_hidden = (g @ W2.T) * (hidden > 0)
    c.close("backward", grad_hidden @ W1.T, "backward runs them in reverse and returns the gradient wrt the input")
    c.close("grads.W1", x.T @ grad_hidden, "backward reaches the first layer's grads['W']")
    c.close("grads.b2", g.sum(0), "backward fills the last layer's grads['b']")


def check_log_softmax(ctx, outcome):
    c = ctx.checker("log_softmax", outcome)
    small, large = ctx.inputs["ls.z"].double(), ctx.inputs["ls.large"].double()
    c.close("small", torch.log_softmax(small, dim=1), "log_softmax(logits) matches the reference")
    c.close("large", torch.log_softmax(large, dim=1), "log_softmax stays finite and right for logits of magnitude 1e4",
            atol=0.05, rtol=1e-4)


def check_mse_loss(ctx, outcome):
    c = ctx.checker("mse_loss", outcome)
    pred, target = ctx.inputs["mse.pred"].double(), ctx.inputs["mse.target"].double()
    diff = pred.reshape(-1) - target
    for shape, label in (("column", "(N, 1)"), ("flat", "(N,)")):
        c.close(
            f"{shape}.forward",
            (diff**2).mean(),
            f"forward(pred {label}, target) is the mean squared error, a 0-dim tensor",
        )
        c.close(f"{shape}.backward", (2 * diff / diff.numel()).reshape(pred.shape if shape == "column" else (-1,)),
                f"backward() returns the gradient with the shape of pred {label}")


def check_cross_entropy_loss(ctx, outcome):
    c = ctx.checker("cross_entropy_loss", outcome)
    z, y = ctx.inputs["ce.z"].double(), ctx.inputs["ce.y"]
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).double()
    c.close(
        "random.forward",
        torch.nn.functional.cross_entropy(z, y),
        "forward(logits, target) is the mean negative log-likelihood",
    )
    c.close(
        "random.backward",
        (torch.softmax(z, 1) - onehot) / len(y),
        "backward() returns the gradient with respect to the logits",
    )
    c.close("zeros.forward", torch.tensor(math.log(z.shape[1]), dtype=torch.float64), "all-zero logits give ln(10)")
    c.close("zeros.backward", (torch.full_like(z, 1 / z.shape[1]) - onehot) / len(y), "backward() for all-zero logits")


def check_sgd_step(ctx, outcome):
    c = ctx.checker("sgd_step", outcome)
    lr = float(ctx.inputs["sgd.lr"])
    for key in ("W", "b"):
        expected = ctx.inputs[f"sgd.{key}"].double() - lr * ctx.inputs[f"sgd.g{key}"].double()
        c.close(key, expected, f"sgd_step(model, lr) updates params['{key}'] -= lr * grads['{key}'] in place")


def probe_loss(x, y, s, c) -> float:
    """The train probe's loss (half the mean squared error of its model of the grader's)."""
    return float(((x * s).sum(1) + c - y).pow(2).mean() / 2)


def train_does_sgd(ctx: Context) -> str | None:
    """None if the train probe's parameters are what plain minibatch SGD gives on the batches the
    student's `train` used (the grader redoes it), else why not."""
    tensors = (ctx.outputs.get("train") or ProbeOutput()).tensors
    s, c, sizes, rows = (tensors.get(f"first.{key}") for key in ("s", "c", "batch_sizes", "batches"))
    x, y = ctx.inputs["train.x"], ctx.inputs["train.y"]
    if s is None or c is None or sizes is None or rows is None:
        return "the batches it used could not be read"
    if sizes.dtype != torch.int64 or rows.dtype != torch.int64:
        return "the batches it used could not be read"
    if sizes.dim() != 1 or (sizes < 0).any() or int(sizes.sum()) != len(rows) or ((rows < 0) | (rows >= len(x))).any():
        return "it trained on rows that are not in the data it was given"
    s_sgd, c_sgd, lr = ctx.inputs["train.s"].clone(), ctx.inputs["train.c"].clone(), float(ctx.inputs["train.lr"])
    for batch in (b for b in rows.split(sizes.tolist()) if len(b)):
        xb = x[batch]
        grad = ((xb * s_sgd).sum(1) + c_sgd - y[batch]) / len(batch)
        s_sgd -= lr * (xb * grad.reshape(-1, 1)).sum(0)
        c_sgd -= lr * grad.sum().reshape(1)
    if (s.shape, c.shape) != (s_sgd.shape, c_sgd.shape):
        return f"the model's parameters have shapes {tuple(s.shape)} and {tuple(c.shape)} after train"
    gap = difference([s.float(), c.float()], [s_sgd, c_sgd])
    return None if gap <= TRAIN_SGD_RTOL else (
        f"its parameters differ from plain SGD on the {len(sizes)} batches it used (by {gap:.2g} of the largest); "
        "each update must be params -= lr * grads, once per batch")


def check_train(ctx, outcome):
    c = ctx.checker("train", outcome)
    x, y = ctx.inputs["train.x"].double(), ctx.inputs["train.y"].double()
    losses = c.meta("first.losses")
    if not c.expect("error" not in losses and losses.get("type") == "builtins.list" and losses.get("length") == 4,
                    "train(...) returns a list with one loss per epoch",
                    losses.get("error") or f"got {losses.get('type')} of length {losses.get('length')}"):
        return
    c.expect(
        losses.get("item_types") == ["builtins.float"],
        "the losses are Python floats",
        f"got {losses.get('item_types')}",
    )
    first = c.output.tensors.get("first.losses")
    again = c.output.tensors.get("again.losses")
    other = c.output.tensors.get("other_seed.losses")
    if first is None or tuple(first.shape) != (4,) or not torch.isfinite(first).all():
        c.expect(False, "the losses are finite numbers")
        return
    c.expect(first[-1] < first[0], "the loss goes down over the epochs", f"losses {first.tolist()}")
    c.expect(again is not None and torch.equal(first, again), "the same seed gives the same losses")
    c.expect(other is not None and not torch.equal(first, other), "another seed shuffles differently")
    s0, c0 = ctx.inputs["train.s"].double(), ctx.inputs["train.c"].double()
    s, bias = c.output.tensors.get("first.s"), c.output.tensors.get("first.c")
    not_sgd = train_does_sgd(ctx)
    halved = not not_sgd and probe_loss(x, y, s.double(), bias.double()) < 0.5 * probe_loss(x, y, s0, c0)
    c.expect(halved, "train updates the parameters by minibatch SGD (params -= lr * grads, batch by batch), "
                     "which halves the loss on the training data", not_sgd or "the loss did not halve")


def check_accuracy(ctx, outcome):
    c = ctx.checker("accuracy", outcome)
    z, y = ctx.inputs["acc.z"], ctx.inputs["acc.y"]
    expected = float((z.argmax(1) == y).double().mean())
    entry = c.meta("value")
    c.expect(entry.get("type") == "builtins.float", "accuracy(logits, y) returns a Python float",
             entry.get("error") or f"got {entry.get('type')}")
    value = entry.get("value")
    c.expect(isinstance(value, (int, float)) and abs(value - expected) < 1e-6,
             "accuracy(logits, y) is the fraction of rows whose argmax is y", f"got {value}, expected {expected:.4f}")


def model_forward(c: Checker, name: str, architecture: list[tuple]) -> Callable | None:
    """Rebuild the student's trained model from its exported params; return its forward function.
    Only a wrong architecture is recorded: a model's points are its metric's."""
    entry = c.meta(name)
    classes = [layer[0] for layer in architecture]
    if entry.get("layers") != classes:
        c.expect(False, f"`{name}` is Sequential({', '.join(classes)})",
                 entry.get("error") or f"its layers are {entry.get('layers')}")
        return None
    weights: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # None: a layer without parameters
    for position, (kind, *shapes) in enumerate(architecture):
        if kind == "Linear":
            W = c.tensor(
                f"{name}.{position}.params.W", f"layer {position} params['W'] has shape {shapes[0]}", shapes[0]
            )
            b = c.tensor(
                f"{name}.{position}.params.b", f"layer {position} params['b'] has shape {shapes[1]}", shapes[1]
            )
            if W is None or b is None:
                return None
            weights.append((W.float(), b.float()))
        else:
            weights.append(None)

    def forward(x):
        for layer in weights:
            x = x.clamp(min=0) if layer is None else x @ layer[0] + layer[1]
        return x
    return forward


def accuracy_on_test(ctx, forward) -> float:
    return float((forward(ctx.x_test).argmax(1) == ctx.y_test).float().mean())


def forward_from(tensors: list[torch.Tensor]) -> Callable:
    """The forward pass of Linear layers (W, b pairs) with a ReLU between consecutive ones."""
    pairs = [(tensors[i].double(), tensors[i + 1].double()) for i in range(0, len(tensors) - 1, 2)]

    def forward(x):
        for position, (W, b) in enumerate(pairs):
            x = (x.clamp(min=0) if position else x) @ W + b
        return x
    return forward


def untrained_loss(ctx, tensors: list[torch.Tensor], classifier: bool) -> tuple[float, float]:
    """(loss on the training images of the parameters a training began from, the bar an untrained
    model clears)."""
    output = forward_from(tensors)(ctx.x_train.double())
    if classifier:
        loss = float((output.logsumexp(1) - output.gather(1, ctx.y_train.view(-1, 1)).squeeze(1)).mean())
        return loss, math.log(10) - CHANCE_MARGIN
    target = ctx.y_train.double()
    return float((output.reshape(-1) - target).pow(2).mean()), UNTRAINED_MSE_SHARE * float(target.var())


def already_trained(ctx: Context, params: Params, classifier: bool) -> str | None:
    """Why these parameters are those of a trained model, or None for an untrained one."""
    loss, bar = untrained_loss(ctx, params, classifier)
    return None if loss >= bar else (f"it already had the loss of a trained model: {loss:.3f} on the training "
                                     f"images, where an untrained one has at least {bar:.2f}")


BLOCK_PARTS = {"Linear": "test_linear", "ReLU": "test_relu", "Sequential": "test_sequential",
               "MSELoss": "test_mse_loss", "CrossEntropyLoss": "test_cross_entropy_loss", "sgd_step": "test_sgd_step"}


def failing_block(ctx: Context, names: tuple[str, ...]) -> str | None:
    """The first of these building blocks of the student's that does not pass all its checks."""
    for name in names:
        if name not in ctx.passing:
            ctx.passing[name] = (train_does_sgd(ctx) is None if name == "train"
                                 else run_check(BLOCK_PARTS[name], ctx).fraction == 1.0)
        if not ctx.passing[name]:
            return f"`{name}`"
    return None


def exported_params(ctx: Context, name: str) -> Params | None:
    """The graded model's parameters as the models probe exported them, in the record's order."""
    output = ctx.outputs.get("models") or ProbeOutput()
    layers = output.meta.get(name, {}).get("layers") if isinstance(output.meta.get(name), dict) else None
    found = []
    for position in range(len(layers) if isinstance(layers, list) else 0):
        keys = (output.meta.get(f"{name}.{position}.keys") or {}).get("value")
        for key in sorted(keys) if isinstance(keys, list) else ():
            found.append(output.tensors.get(f"{name}.{position}.params.{key}"))
    return cast(Params, found) if found and all(t is not None for t in found) else None


def check_provenance(ctx, outcome, name: str, architecture: list[tuple], blocks: tuple[str, ...]) -> None:
    """The model's parameters came from the student's own training, from scratch, in this run: the
    grader retrains it from the record of that training (retrain.py) and must reach them."""
    c = ctx.checker("provenance", outcome)
    p, classifier = c.meta(name), name != "regression_model"
    claim = f"`{name}` was trained from a fresh start by your own `train` (or `sgd_step`) in this run"
    if not p.get("trained"):
        why = ("its parameters were changed after your training left them" if p.get("own_object_trained") else
               "no call of your `train` or `sgd_step` produced these parameters: weights loaded from a file "
               "or set by hand earn no points") if p else (c.output.error or "its training was not traced")
        c.require(False, claim, why)
        return
    record = read_record(c.output, name, [shape for _, *shapes in architecture for shape in shapes])
    if isinstance(record, str):
        c.review(claim, record)
        return
    exported = exported_params(ctx, name)
    if exported is None or difference(exported, record.checkpoints[-1].params) != 0:
        c.require(False, claim, "the parameters the grader scored are not the ones your training left")
        return
    y = ctx.y_train if classifier else ctx.y_train.float()
    verdict = verify(
        record,
        ctx.rows,
        ctx.x_train,
        y,
        classifier,
        lambda params: already_trained(ctx, params, classifier),
        failing_block(ctx, blocks),
    )
    if verdict.outcome == "inconclusive":
        c.review(claim, verdict.reason)
    else:
        c.require(verdict.outcome == "confirmed", claim, verdict.reason, measured=verdict.difference)


REGRESSION = [("Linear", (784, 1), (1,))]
LOGISTIC = [("Linear", (784, 10), (10,))]
MLP = [("Linear", (784, 30), (30,)), ("ReLU",), ("Linear", (30, 10), (10,))]
TRAINERS = ("sgd_step", "train")


def check_regression(ctx, outcome):
    c = ctx.checker("models", outcome)
    forward = model_forward(c, "regression_model", REGRESSION)
    if forward:
        value, ceiling = (
            float((forward(ctx.x_test).reshape(-1) - ctx.y_test.float()).pow(2).mean()),
            ctx.floors.regression_mse,
        )
        c.expect(
            value <= ceiling, f"test MSE recomputed by the grader is {value:.3f} (at most {ceiling})", measured=value
        )
        check_provenance(ctx, outcome, "regression_model", REGRESSION, ("Linear", "Sequential", "MSELoss", *TRAINERS))


def check_logistic(ctx, outcome):
    c = ctx.checker("models", outcome)
    forward = model_forward(c, "logistic_model", LOGISTIC)
    if forward:
        value, floor = accuracy_on_test(ctx, forward), ctx.floors.logistic_accuracy
        c.expect(
            value >= floor, f"test accuracy recomputed by the grader is {value:.4f} (at least {floor})", measured=value
        )
        check_provenance(
            ctx, outcome, "logistic_model", LOGISTIC, ("Linear", "Sequential", "CrossEntropyLoss", *TRAINERS)
        )


def check_mlp(ctx, outcome):
    c = ctx.checker("models", outcome)
    forward = model_forward(c, "mlp_model", MLP)
    if not forward:
        return
    value, floor = accuracy_on_test(ctx, forward), ctx.floors.mlp_accuracy
    c.expect(
        value >= floor, f"test accuracy recomputed by the grader is {value:.4f} (at least {floor})", measured=value
    )
    logistic = model_forward(Checker(c.output, Outcome()), "logistic_model", LOGISTIC)
    baseline = accuracy_on_test(ctx, logistic) if logistic else 0.0
    c.expect(value > baseline, f"it beats logistic_model ({baseline:.4f})")
    check_provenance(ctx, outcome, "mlp_model", MLP, ("Linear", "ReLU", "Sequential", "CrossEntropyLoss", *TRAINERS))


@dataclass(frozen=True)
class PartCheck:
    """The trusted check of one autograded part."""

    run: Callable[[Context, Outcome], None]
    names: tuple[str, ...]   # contract names that must be the notebook's own
    uses: frozenset[str]     # implemented names and graded models whose code it exercises (for violations)


def part(run, names, *uses) -> PartCheck:
    return PartCheck(run, tuple(names), frozenset(names) | frozenset(uses))


TRAINING = ("Linear", "Sequential", "sgd_step", "train")
CLASSIFIER = (*TRAINING, "log_softmax", "CrossEntropyLoss")
CHECKS: dict[str, PartCheck] = {  # grade_id -> its check; a new check is a function and a line here
    "test_linear": part(check_linear, ["Linear"]),
    "test_relu": part(check_relu, ["ReLU"]),
    "test_sequential": part(check_sequential, ["Linear", "ReLU", "Sequential"]),
    "test_log_softmax": part(check_log_softmax, ["log_softmax"]),
    "test_mse_loss": part(check_mse_loss, ["MSELoss"]),
    "test_cross_entropy_loss": part(check_cross_entropy_loss, ["CrossEntropyLoss"], "log_softmax"),
    "test_sgd_step": part(check_sgd_step, ["sgd_step"]),
    "test_train": part(check_train, ["train"], "sgd_step"),
    "test_accuracy": part(check_accuracy, ["accuracy"]),
    "test_regression": part(check_regression, ["regression_model"], "MSELoss", *TRAINING),
    "test_logistic": part(check_logistic, ["logistic_model"], *CLASSIFIER),
    "test_mlp": part(check_mlp, ["mlp_model"], "logistic_model", "ReLU", *CLASSIFIER),
}


def run_check(grade_id: str, ctx: Context) -> Outcome:
    """The part's check; exports it cannot use (the student's data) cost this part, never the others."""
    outcome = Outcome()
    spec = CHECKS[grade_id]
    try:
        if names_defined(ctx, outcome, *spec.names):
            spec.run(ctx, outcome)
    except Exception as error:
        logger.warning("%s: malformed probe export (%s: %s)", grade_id, type(error).__name__, error)
        outcome.lines.append(
            CheckLine(
                False,
                "the grader could not check this part: what your code returned "
                f"could not be read ({type(error).__name__}: {str(error)[:200]})",
                condition=True,
            )
        )
    return outcome
