"""Score step without a sandbox: points from the checks' outcomes, pending manual parts, a failed run,
and which parts a policy violation costs."""
from __future__ import annotations

import pytest

from coursekit.grading import score as scoring
from coursekit.grading.checks import CheckLine
from coursekit.grading.policy import Violation
from coursekit.grading.report import part_output
from coursekit.grading.rubric import GradedCell, Rubric
from coursekit.grading.score import costed_parts, describe
from support import context

POINTS = {"test_linear": 8, "test_relu": 5, "test_sequential": 6, "test_log_softmax": 6, "test_mse_loss": 4,
          "test_cross_entropy_loss": 6, "test_sgd_step": 3, "test_train": 7, "test_accuracy": 3,
          "test_regression": 10, "test_logistic": 10, "test_mlp": 12}
RUBRIC = Rubric(
    (
        *(GradedCell(g, p, True, "Part 1" if p < 7 else "Part 2") for g, p in POINTS.items()),
        GradedCell("regression_answer", 6, False, "Part 2"),
        GradedCell("reflection_answer", 4, False, "Part 3"),
    )
)


def by_id(results) -> dict:
    return {r.grade_id: r for r in results}


def test_a_perfect_run_earns_every_autograded_point_and_leaves_the_written_answers_pending():
    results = scoring.score(RUBRIC, context(0), [])
    assert [r.grade_id for r in results] == [c.grade_id for c in RUBRIC.cells]
    for r in results:
        if r.grade_id in POINTS:
            assert (r.score, r.max_score, r.pending, r.passed) == (POINTS[r.grade_id], POINTS[r.grade_id], False, True)
            assert part_output(r).startswith("PASS  ") and "FAIL" not in part_output(r)
        else:
            assert (r.score, r.pending, r.passed, r.lines) == (0.0, True, False, [])
            assert part_output(r) == "Pending: graded by hand by the course staff."
    assert by_id(results)["regression_answer"].max_score == 6 and by_id(results)["test_train"].part == "Part 2"


def test_a_part_earns_its_fraction_of_the_points_rounded_to_hundredths():
    ctx = context(0)
    ctx.outputs["relu"].tensors["forward"][0, 0] += 1.0      # 2 of 3 sub-checks
    ctx.outputs["linear"].tensors["backward"][0, 0] += 1.0   # 3 of 4
    results = by_id(scoring.score(RUBRIC, ctx, []))
    assert results["test_relu"].score == 3.33 and not results["test_relu"].passed
    assert results["test_linear"].score == 6.0
    assert "FAIL  backward(grad_out) returns the gradient with respect to x: differs" in part_output(
        results["test_linear"]
    )
    assert sum(r.score for r in results.values()) == sum(POINTS.values()) - 8 - 5 + 6 + 3.33


@pytest.mark.parametrize("ctx_given", [True, False])
def test_a_failure_zeroes_every_autograded_part_and_says_why(ctx_given):
    why = "Your notebook could not be read: not JSON"
    results = scoring.score(RUBRIC, context(0) if ctx_given else None, [], failure=why)
    for r in results:
        if r.grade_id in POINTS:
            assert (r.score, r.lines, r.pending) == (0.0, [CheckLine(False, why)], False)
            assert part_output(r) == f"FAIL  {why}"
        else:
            assert r.pending
    assert [r.lines for r in scoring.score(RUBRIC, None, [])][0] == [CheckLine(False, "not run")]


# The parts whose points depend on each implemented name and graded model (the spec of CHECKS[...].uses).
COSTS = {
    "Linear": {"test_linear", "test_sequential", "test_regression", "test_logistic", "test_mlp"},
    "ReLU": {"test_relu", "test_sequential", "test_mlp"},
    "Sequential": {"test_sequential", "test_regression", "test_logistic", "test_mlp"},
    "log_softmax": {"test_log_softmax", "test_cross_entropy_loss", "test_logistic", "test_mlp"},
    "MSELoss": {"test_mse_loss", "test_regression"},
    "CrossEntropyLoss": {"test_cross_entropy_loss", "test_logistic", "test_mlp"},
    "sgd_step": {"test_sgd_step", "test_train", "test_regression", "test_logistic", "test_mlp"},
    "train": {"test_train", "test_regression", "test_logistic", "test_mlp"},
    "accuracy": {"test_accuracy"},
    "regression_model": {"test_regression"},
    "logistic_model": {"test_logistic", "test_mlp"},
    "mlp_model": {"test_mlp"},
}


@pytest.mark.parametrize("name", COSTS)
def test_a_violation_costs_exactly_the_parts_that_use_what_it_touches(name):
    violation = Violation((name,), 12, 3, "torch.nn is not allowed", "torch-nn")
    results = scoring.score(RUBRIC, context(0), [violation])
    zeroed = {r.grade_id for r in results if r.grade_id in POINTS and r.score == 0.0}
    assert zeroed == COSTS[name] == set(costed_parts([violation]))
    for grade_id in zeroed:
        lines = by_id(results)[grade_id].lines
        assert lines[0] == CheckLine(False, "policy violation in cell 12, line 3: torch.nn is not allowed")
        assert all(line.passed for line in lines[1:]) and len(lines) > 1  # the checks' own lines follow, as they ran
    assert all(r.score == r.max_score for r in results if r.grade_id in POINTS.keys() - zeroed)


def test_a_violation_that_touches_nothing_graded_costs_nothing():
    assert costed_parts([Violation((), 40, 1, "a plot used torch.softmax")]) == {}


def test_describe_gives_one_line_per_cell_in_order():
    found = [
        Violation(("train",), 9, 4, "autograd is not allowed"),
        Violation(("Linear",), 3, None, "grad mode was on"),
        Violation(("train",), 9, 2, "torch.optim is not allowed"),
        Violation(("train",), 9, 4, "again"),
        Violation(("train",), 9, None, "at run time"),
    ]
    assert [line.sentence for line in describe(found)] == ["policy violation in cell 3: grad mode was on",
                               "policy violation in cell 9, line 2, 4: autograd is not allowed (and 3 more)"]
    assert describe([]) == []


def test_describe_counts_the_other_violations_of_a_cell_beyond_the_first():
    two = [Violation(("train",), 9, 4, "autograd is not allowed"), Violation(("train",), 9, 6, "again")]
    assert [line.sentence for line in describe(two)] == [
        "policy violation in cell 9, line 4, 6: autograd is not allowed (and 1 more)"]
