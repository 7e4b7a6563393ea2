"""The trusted checks that decide the points, on probe exports made without a sandbox.

A reference solution trains its models under the real training recorder and goes through the real
in-sandbox probes on `make_inputs(seed)` (tests/support.py). A perfect set earns every part; each single
corruption costs exactly one part, by an exact fraction, with the sentence the student reads."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from coursekit.grading.checks import CHECKS, Context, run_check
from coursekit.grading.probe_data import PROBE_NAMES, ProbeOutput
from coursekit.grading.retrain import fingerprints, row_weights
from support import SANDBOX_PROBE, X_TEST, Y_TEST, context, model_metrics, perfect_outputs


def fractions(ctx: Context) -> dict[str, float]:
    return {grade_id: run_check(grade_id, ctx).fraction for grade_id in CHECKS}


def failures(ctx: Context, grade_id: str) -> list[str]:
    return [line.sentence for line in run_check(grade_id, ctx).lines if not line.passed]


def test_the_probes_cover_every_contract_name_and_the_checks_every_probe():
    assert set(SANDBOX_PROBE.PROBES) == set(PROBE_NAMES)
    names = {name for check in CHECKS.values() for name in check.names}
    assert names == set(SANDBOX_PROBE.CONTRACT_NAMES + SANDBOX_PROBE.MODELS)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_perfect_submission_earns_every_part(seed):
    ctx = context(seed)
    for grade_id in CHECKS:
        outcome = run_check(grade_id, ctx)
        assert outcome.fraction == 1.0, (grade_id, [line.sentence for line in outcome.lines if not line.passed])
        assert outcome.lines and all(line.passed and not line.review for line in outcome.lines), grade_id


def test_the_made_up_subset_sits_where_the_model_checks_need_it():
    metrics = model_metrics(perfect_outputs(0))
    assert metrics["mlp"] > metrics["logistic"] + 0.1 and metrics["regression"] < 10
    assert context(0).outputs["names"].meta["accuracy"] == {"defined": True, "module": "__main__", "kind": "function"}


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


def model_weight(name, position, change, bias=0.0):
    def corrupt(outputs, inputs):
        tensors = outputs["models"].tensors
        tensors[f"{name}.{position}.params.W"] = change(tensors[f"{name}.{position}.params.W"])
        tensors[f"{name}.{position}.params.b"] = tensors[f"{name}.{position}.params.b"] + bias
    return corrupt


def last_checkpoint(name, by, order=0):
    """The record's last checkpoint moved, as if laundered weights were put there."""
    def corrupt(outputs, inputs):
        last = len(outputs["provenance"].meta[name]["checkpoints"]) - 1
        outputs["provenance"].tensors[f"{name}.checkpoint.{last}.{order}"] += by
    return corrupt


def trained_start(name, parameters=2):
    """The record's first checkpoint: the model's trained parameters (weights brought in, then trained on)."""
    def corrupt(outputs, inputs):
        tensors = outputs["provenance"].tensors
        tensors.update(
            {
                f"{name}.checkpoint.0.{i}": tensors[
                    f"{name}.checkpoint.{len(outputs['provenance'].meta[name]['checkpoints']) - 1}.{i}"
                ].clone()
                for i in range(parameters)
            }
        )
    return corrupt


def with_test_rows(name, count):
    def corrupt(outputs, inputs):
        outputs["provenance"].tensors[f"{name}.rows"][:count] = fingerprints(X_TEST[:count], row_weights())
    return corrupt


def floors(**changes):
    """Changes the context, not the exports: set on the Context by the test below."""
    return ("floors", changes)


def subset_both_models_get_right(outputs, inputs):
    """Changes the context, not the exports: the test subset where logistic regression is right too."""


CORRUPTIONS = {
    "linear forward off by 1e-2": (
        nudge("linear", "forward", (1, 0), 1e-2),
        "test_linear",
        3 / 4,
        "forward(x) returns x @ W + b: differs from the expected value by up to 0.01 (at index (1, 0))",
    ),
    "linear grads['b'] just outside the tolerance": (
        nudge("linear", "grads.b", (0,), 3e-3),
        "test_linear",
        3 / 4,
        "backward fills grads['b'], the loss's gradient with respect to b: differs",
    ),
    "linear init W of the wrong shape": (
        replace_tensor("linear", "init.params.W", lambda W: W.T.contiguous()),
        "test_linear",
        4 / 5,
        "params['W'] has shape",
    ),
    "relu forward flattened": (
        replace_tensor("relu", "forward", lambda t: t.reshape(-1)),
        "test_relu",
        2 / 3,
        "forward(x) returns max(x, 0): shape (",
    ),
    "relu params not a dict": (
        lambda outputs, inputs: outputs["relu"].meta.update(params={"type": "builtins.list", "length": 0}),
        "test_relu",
        2 / 3,
        "ReLU().params is an empty dict: got builtins.list",
    ),
    "sequential layers a tuple": (
        meta("sequential", "layers", type="tuple"),
        "test_sequential",
        4 / 5,
        "Sequential(a, b, c).layers is a list of the 3 layers: got tuple of length 3",
    ),
    "sgd_step W as an int tensor": (
        replace_tensor("sgd_step", "W", lambda t: t.round().long()),
        "test_sgd_step",
        1 / 2,
        "updates params['W'] -= lr * grads['W'] in place: dtype torch.int64, expected floating point",
    ),
    "log_softmax raises on large logits": (
        raised("log_softmax", "large", "ValueError: too large", "line 3: raise ValueError('too large')"),
        "test_log_softmax",
        1 / 2,
        "raised ValueError: too large (line 3: raise ValueError('too large'))",
    ),
    "log_softmax returns a list": (
        meta("log_softmax", "small", type="builtins.list"),
        "test_log_softmax",
        1 / 2,
        "returned a builtins.list, expected a torch.Tensor",
    ),
    "cross-entropy backward with a nan": (
        nudge("cross_entropy_loss", "random.backward", (0, 0), math.nan),
        "test_cross_entropy_loss",
        3 / 4,
        "backward() returns the gradient with respect to the logits: contains inf or nan",
    ),
    "cross-entropy of zeros with an inf": (
        replace_tensor("cross_entropy_loss", "zeros.forward", lambda t: torch.tensor(math.inf)),
        "test_cross_entropy_loss",
        3 / 4,
        "all-zero logits give ln(10): contains inf or nan",
    ),
    "the mse_loss probe did not run": (
        missing("mse_loss", "the probe did not run (the notebook did not finish)"),
        "test_mse_loss",
        0.0,
        "is the mean squared error, a 0-dim tensor: the probe did not run (the notebook did not finish)",
    ),
    "mse forward not 0-dim": (
        replace_tensor("mse_loss", "flat.forward", lambda t: t.reshape(1)),
        "test_mse_loss",
        3 / 4,
        "shape (1,), expected ()",
    ),
    "accuracy returns a numpy float": (
        meta("accuracy", "value", type="numpy.float64", value=None),
        "test_accuracy",
        0.0,
        "returns a Python float: got numpy.float64",
    ),
    "accuracy is off": (
        lambda outputs, inputs: (
            outputs["accuracy"].meta["value"].update(value=outputs["accuracy"].meta["value"]["value"] + 0.01)
        ),
        "test_accuracy",
        1 / 2,
        "accuracy(logits, y) is the fraction of rows whose argmax is y: got ",
    ),
    "accuracy is fastai's": (
        meta("names", "accuracy", module="fastai.metrics"),
        "test_accuracy",
        0.0,
        "`accuracy` is defined in the notebook: it comes from fastai.metrics, not from your code",
    ),
    "sgd_step is not defined": (
        meta("names", "sgd_step", defined=False, module=None),
        "test_sgd_step",
        0.0,
        "`sgd_step` is defined: it is not defined in the notebook",
    ),
    "train losses do not go down": (
        both(losses("first", lambda t: t.flip(0)), losses("again", lambda t: t.flip(0))),
        "test_train",
        5 / 6,
        "the loss goes down over the epochs: losses [",
    ),
    "train gives other losses for the same seed": (
        losses("again", lambda t: t + 1e-9),
        "test_train",
        5 / 6,
        "the same seed gives the same losses",
    ),
    "train ignores its seed": (
        lambda outputs, inputs: outputs["train"].tensors.update(
            {"other_seed.losses": outputs["train"].tensors["first.losses"].clone()}
        ),
        "test_train",
        5 / 6,
        "another seed shuffles differently",
    ),
    "train returns numpy floats": (
        meta("train", "first.losses", item_types=["numpy.float64"]),
        "test_train",
        5 / 6,
        "the losses are Python floats: got ['numpy.float64']",
    ),
    "train does not change the parameters": (
        lambda outputs, inputs: outputs["train"].tensors.update({"first.s": torch.zeros(5), "first.c": torch.zeros(1)}),
        "test_train",
        5 / 6,
        "halves the loss on the training data: its parameters differ from plain SGD on the 16 batches",
    ),
    "train's update is not plain SGD": (
        lambda outputs, inputs: outputs["train"].tensors["first.s"].mul_(1.01),
        "test_train",
        5 / 6,
        "each update must be params -= lr * grads, once per batch",
    ),
    "train's batches are not rows of its data": (
        lambda outputs, inputs: outputs["train"].tensors["first.batches"].__setitem__(0, 64),
        "test_train",
        5 / 6,
        "it trained on rows that are not in the data it was given",
    ),
    "train returns 3 losses for 4 epochs": (
        meta("train", "first.losses", length=3),
        "test_train",
        0.0,
        "one loss per epoch: got builtins.list of length 3",
    ),
    "train leaves params of another shape": (
        lambda outputs, inputs: outputs["train"].tensors.update({"first.s": torch.zeros(1, 5)}),
        "test_train",
        5 / 6,
        "halves the loss on the training data: the model's parameters have shapes (1, 5) and (1,) after train",
    ),
    "train's losses forged as a matrix": (
        losses("first", lambda t: t.reshape(2, 2)),
        "test_train",
        2 / 3,
        "the losses are finite numbers",
    ),
    "a forged description that is not an object": (
        lambda outputs, inputs: outputs["linear"].meta.update(forward=[1]),
        "test_linear",
        3 / 4,
        "forward(x) returns x @ W + b: its description in the probe's export is malformed",
    ),
    "the scored mlp is not where its training ended": (
        last_checkpoint("mlp_model", 0.01),
        "test_mlp",
        0.0,
        "the parameters the grader scored are not the ones your training left",
    ),
    "weights laundered into the mlp's training record": (
        both(last_checkpoint("mlp_model", 0.001, order=2), model_weight("mlp_model", 2, lambda W: W + 0.001)),
        "test_mlp",
        0.0,
        "retraining it with the grader's own SGD on the batches your training used",
    ),
    "the logistic model trained on a test image": (
        with_test_rows("logistic_model", 2),
        "test_logistic",
        0.0,
        "2 of the rows its training used are test images",
    ),
    "the regression began from trained weights": (
        trained_start("regression_model"),
        "test_regression",
        0.0,
        "when its training began (cell None) it already had the loss of a trained model",
    ),
    "the two-layer model began from trained weights": (  # both layers count in the loss it began with
        trained_start("mlp_model", 4),
        "test_mlp",
        0.0,
        "when its training began (cell None) it already had the loss of a trained model",
    ),
    "regression predicts 2 more than the digit": (
        model_weight("regression_model", 0, lambda W: W, bias=2.0),
        "test_regression",
        0.0,
        "(at most ",
    ),
    "logistic below its floor": (floors(logistic_accuracy=1.0), "test_logistic", 0.0, "(at least 1.0)"),
    "mlp does not beat logistic": (subset_both_models_get_right, "test_mlp", 1 / 2, "it beats logistic_model (1.0000)"),
    "mlp below its floor": (
        floors(mlp_accuracy=1.01),
        "test_mlp",
        1 / 2,
        "test accuracy recomputed by the grader is 1.0000 (at least 1.01)",
    ),
    "mlp without its ReLU": (
        lambda outputs, inputs: outputs["models"].meta.update(mlp_model={"layers": ["Linear", "Linear"]}),
        "test_mlp",
        0.0,
        "`mlp_model` is Sequential(Linear, ReLU, Linear): its layers are ['Linear', 'Linear']",
    ),
    "mlp's weights not a tensor": (
        meta("models", "mlp_model.2.params.W", type="numpy.ndarray"),
        "test_mlp",
        0.0,
        "layer 2 params['W'] has shape (30, 10): returned a numpy.ndarray, expected a torch.Tensor",
    ),
    "logistic weights set by hand": (
        lambda outputs, inputs: outputs["provenance"].meta.update(
            logistic_model={"trained": False, "own_object_trained": False}
        ),
        "test_logistic",
        0.0,
        "weights loaded from a file or set by hand earn no points",
    ),
    "regression training not traced": (
        lambda outputs, inputs: outputs["provenance"].meta.pop("regression_model"),
        "test_regression",
        0.0,
        "its training was not traced",
    ),
}


def corrupted(corrupt) -> Context:
    ctx = context(1)
    if isinstance(corrupt, tuple):  # a change of the grader's floors
        return dataclasses.replace(ctx, floors=dataclasses.replace(ctx.floors, **corrupt[1]))
    if corrupt is subset_both_models_get_right:
        right = both_right(ctx)
        lenient = dataclasses.replace(ctx.floors, regression_mse=math.inf)
        return dataclasses.replace(ctx, x_test=X_TEST[right], y_test=Y_TEST[right], floors=lenient)
    corrupt(ctx.outputs, ctx.inputs)
    return ctx


def both_right(ctx) -> torch.Tensor:
    tensors = ctx.outputs["models"].tensors
    logistic = X_TEST @ tensors["logistic_model.0.params.W"] + tensors["logistic_model.0.params.b"]
    return logistic.argmax(1) == Y_TEST


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_one_corruption_costs_one_part(name):
    corrupt, grade_id, fraction, sentence = CORRUPTIONS[name]
    ctx = corrupted(corrupt)
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
    mse = model_metrics(ctx.outputs)["regression"]
    at = dataclasses.replace(ctx, floors=dataclasses.replace(ctx.floors, regression_mse=mse))
    assert run_check("test_regression", at).fraction == 1.0
    below = dataclasses.replace(ctx, floors=dataclasses.replace(ctx.floors, regression_mse=mse - 1e-3))
    assert run_check("test_regression", below).fraction == 0.0


@pytest.mark.parametrize(
    "forge, why",
    [
        (
            lambda out: out["provenance"].tensors.update({"logistic_model.checkpoint.0.0": torch.zeros(3, 3)}),
            "other shapes",
        ),
        (lambda out: out["provenance"].tensors.pop("mlp_model.rows"), "is incomplete"),
        (lambda out: out["provenance"].meta["regression_model"].update(overflow=True), "incomplete"),
    ],
)
def test_an_unreadable_or_incomplete_training_record_keeps_the_points_for_a_person_to_decide(forge, why):
    ctx = context(1)
    forge(ctx.outputs)
    outcomes = {g: run_check(g, ctx) for g in CHECKS}
    assert set(o.fraction for o in outcomes.values()) == {1.0}
    reviews = [line for o in outcomes.values() for line in o.lines if line.review]
    assert len(reviews) == 1 and why in reviews[0].sentence and "a person will look at it" in reviews[0].sentence


def test_a_building_block_that_fails_turns_a_retraining_difference_into_review():
    ctx = context(1)
    last_checkpoint("mlp_model", 0.001, order=2)(ctx.outputs, ctx.inputs)
    model_weight("mlp_model", 2, lambda W: W + 0.001)(ctx.outputs, ctx.inputs)
    ctx.outputs["relu"].tensors["backward"][0, 0] += 1.0  # ReLU's backward is wrong: it may explain the difference
    outcome = run_check("test_mlp", ctx)
    assert outcome.fraction == 1.0 and "your `ReLU` does not pass all of its checks" in outcome.lines[-1].sentence


def test_an_empty_batch_in_trains_record_is_still_plain_sgd():
    ctx = context(0)
    sizes = ctx.outputs["train"].tensors["first.batch_sizes"]
    ctx.outputs["train"].tensors["first.batch_sizes"] = torch.cat([sizes, torch.zeros(1, dtype=torch.int64)])
    assert fractions(ctx)["test_train"] == 1.0
