"""The grader's side of training provenance, on hand-made probe exports: which conditions cost a
model its points, and what the student is told."""
from __future__ import annotations

import torch

from coursekit.grading.checks import CheckLine, Context, Outcome, check_provenance
from coursekit.grading.probe_data import ProbeOutput

G = torch.Generator().manual_seed(0)
Y = torch.randint(0, 10, (200,), generator=G)
X = torch.cat([torch.eye(10)[Y], torch.rand(200, 6, generator=G)], dim=1)  # the label is in the pixels
HONEST = {"trained": True, "events": 2, "train_calls": 2, "changed_after": False, "began_in": 47,
          "replaced_in": None, "replay_difference": 0.0, "replay_scale": 1.3}


def outcome_for(meta: dict, start: list[torch.Tensor], name="logistic_model", classifier=True) -> Outcome:
    tensors = {f"{name}.start.{i}": t for i, t in enumerate(start)}
    ctx = Context({"provenance": ProbeOutput(tensors, {name: meta})}, {}, X, Y, X, Y)
    outcome = Outcome([CheckLine(True, "test accuracy recomputed by the grader is 0.91", measured=0.91)])
    check_provenance(ctx, outcome, name, classifier)
    return outcome


def fresh():
    return [torch.randn(16, 10, generator=G) * 0.01, torch.zeros(10)]


def test_an_honest_model_keeps_its_points():
    outcome = outcome_for(HONEST, fresh())
    assert outcome.fraction == 1.0 and outcome.lines[-1].passed


def test_training_that_began_from_trained_weights_costs_the_model():
    reads_the_label = torch.cat([10 * torch.eye(10), torch.zeros(6, 10)])
    outcome = outcome_for(HONEST, [reads_the_label, torch.zeros(10)])
    assert outcome.fraction == 0.0 and "when its training began (cell 47) it already had the loss" in outcome.lines[-1].sentence


def test_weights_from_nowhere_cost_the_model():
    outcome = outcome_for({"trained": False, "own_object_trained": False}, [])
    assert outcome.fraction == 0.0 and "weights loaded from a file or set by hand earn no points" in outcome.lines[-1].sentence


def test_changes_after_or_between_training_cost_the_model():
    for key, value, words in (("changed_after", True, "changed after your training left them"),
                              ("replaced_in", 51, "replaced between two training calls (cell 51)"),
                              ("replay_difference", 0.5, "gave other parameters (off by up to 0.5)")):
        outcome = outcome_for({**HONEST, key: value}, fresh())
        assert outcome.fraction == 0.0 and words in outcome.lines[-1].sentence, key


def test_the_replay_tolerance_is_relative_to_the_parameters():
    assert outcome_for({**HONEST, "replay_difference": 1e-6, "replay_scale": 1.0}, fresh()).fraction == 1.0
    assert outcome_for({**HONEST, "replay_difference": 1e-4, "replay_scale": 1.0}, fresh()).fraction == 0.0


def test_an_untrained_regression_is_far_from_the_targets():
    targets = Y.double()
    assert 0.75 * float(targets.var()) < float(targets.pow(2).mean())  # zeros: untrained
    assert outcome_for(HONEST, [torch.zeros(16, 1), torch.zeros(1)], "regression_model", False).fraction == 1.0
    mean = [torch.zeros(16, 1), targets.mean().float().reshape(1)]  # predicting the mean is no skill either
    assert outcome_for(HONEST, mean, "regression_model", False).fraction == 1.0
    fitted = [torch.cat([torch.arange(10.0).reshape(10, 1), torch.zeros(6, 1)]), torch.zeros(1)]  # reads the digit
    assert outcome_for(HONEST, fitted, "regression_model", False).fraction == 0.0


def test_provenance_earns_nothing_by_itself():
    outcome = Outcome([CheckLine(False, "test accuracy recomputed by the grader is 0.52", measured=0.52)])
    ctx = Context({"provenance": ProbeOutput({f"logistic_model.start.{i}": t for i, t in enumerate(fresh())},
                                             {"logistic_model": HONEST})}, {}, X, Y, X, Y)
    check_provenance(ctx, outcome, "logistic_model", True)
    assert outcome.lines[-1].passed and outcome.fraction == 0.0
