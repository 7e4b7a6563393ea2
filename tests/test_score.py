"""Score step without a sandbox: points from the checks' outcomes, pending manual parts, a failed run,
and which parts a policy violation costs."""
from __future__ import annotations

import pytest

from coursekit.grading import score as scoring
from coursekit.grading.rubric import GradedCell, Rubric
from coursekit.grading.sanitize import EditableCell
from coursekit.grading.scan import Finding
from coursekit.grading.checks import CheckLine
from coursekit.grading.report import part_output
from coursekit.grading.score import Violation, describe, guard_violations, owner_of_cell, violations_from

from coursekit.in_sandbox.protocol import RunLog
from test_checks import context

POINTS = {"test_linear": 8, "test_relu": 5, "test_sequential": 6, "test_log_softmax": 6, "test_mse_loss": 4,
          "test_cross_entropy_loss": 6, "test_sgd_step": 3, "test_train": 7, "test_accuracy": 3,
          "test_regression": 10, "test_logistic": 10, "test_mlp": 12}
RUBRIC = Rubric((*(GradedCell(g, p, True, "Part 1" if p < 7 else "Part 2") for g, p in POINTS.items()),
                 GradedCell("regression_answer", 6, False, "Part 2"), GradedCell("reflection_answer", 4, False, "Part 3")))


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
    assert "FAIL  backward(grad_out) returns the gradient with respect to x: differs" in part_output(results["test_linear"])
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


# The parts whose points depend on each solution cell's code (the spec of CHECKS[...].solutions).
COSTS = {
    "linear": {"test_linear", "test_sequential", "test_regression", "test_logistic", "test_mlp"},
    "relu": {"test_relu", "test_sequential", "test_mlp"},
    "log_softmax": {"test_log_softmax", "test_cross_entropy_loss", "test_logistic", "test_mlp"},
    "mse_loss": {"test_mse_loss", "test_regression"},
    "sgd_step": {"test_sgd_step", "test_train", "test_regression", "test_logistic", "test_mlp"},
    "accuracy": {"test_accuracy"},
    "logistic": {"test_logistic", "test_mlp"},
    "mlp": {"test_mlp"},
    "regression": {"test_regression"},
    "regression_answer": set(),  # a written answer's cell exercises no graded code
    None: set(),
}


@pytest.mark.parametrize("owner", COSTS)
def test_a_violation_costs_exactly_the_parts_that_run_its_cell(owner):
    violation = Violation(owner, 12, 3, "torch.nn is not allowed", "torch-nn")
    results = scoring.score(RUBRIC, context(0), [violation])
    zeroed = {r.grade_id for r in results if r.grade_id in POINTS and r.score == 0.0}
    assert zeroed == COSTS[owner]
    for grade_id in zeroed:
        lines = by_id(results)[grade_id].lines
        assert lines[0] == CheckLine(False, "policy violation in cell 12, line 3: torch.nn is not allowed")
        assert all(line.passed for line in lines[1:]) and len(lines) > 1  # the checks' own lines follow, as they ran
    assert all(r.score == r.max_score for r in results if r.grade_id in POINTS.keys() - zeroed)


def test_describe_gives_one_line_per_cell_in_order():
    found = [Violation("train", 9, 4, "autograd is not allowed"), Violation("linear", 3, None, "grad mode was on"),
             Violation("train", 9, 2, "torch.optim is not allowed"), Violation("train", 9, 4, "again"),
             Violation("train", 9, None, "at run time")]
    assert [line.sentence for line in describe(found)] == ["policy violation in cell 3: grad mode was on",
                               "policy violation in cell 9, line 2, 4: autograd is not allowed (and 3 more)"]
    assert describe([]) == []


EDITABLE = [EditableCell(3, "def log_softmax(z): ...", "log_softmax"), EditableCell(4, "# added", "log_softmax"),
            EditableCell(9, "def train(...): ...", "train")]


def test_owner_of_a_cell_is_the_nearest_editable_cell_at_or_above_it():
    assert [owner_of_cell(EDITABLE, cell) for cell in (3, 4, 8, 9, 40)] == ["log_softmax"] * 3 + ["train"] * 2
    assert owner_of_cell(EDITABLE, 1) == "log_softmax"  # above every editable cell: the first one's
    assert owner_of_cell(EDITABLE, -1) == "log_softmax"
    assert owner_of_cell([], 5) is None


def test_only_scan_violations_and_run_time_autograd_become_violations():
    findings = [Finding("violation", "torch-nn", 9, 2, "torch.nn is not allowed"),
                Finding("suspicious", "dynamic-code", 9, 3, "eval hides code"),
                Finding("unparsable", "syntax", 3, 1, "cannot parse"),
                Finding("violation", "autograd", 7, 1, "in a provided cell")]
    runtime = [{"cell": 8, "found": ["p.requires_grad", "x" * 400]}, {"cell": "8", "found": "y"}, None]
    found = violations_from(findings, runtime, EDITABLE)
    assert [(v.owner, v.cell, v.line, v.rule) for v in found] == [
        ("train", 9, 2, "torch-nn"), (None, 7, 1, "autograd"),
        ("log_softmax", 8, None, "autograd-at-run-time"), ("log_softmax", -1, None, "autograd-at-run-time")]
    assert found[2].message.startswith("after this cell ran, autograd was in use: ['p.requires_grad', 'xxx")
    assert len(found[2].message) == len("after this cell ran, autograd was in use: ") + 300


def test_guard_records_that_are_not_a_list_or_not_well_formed_are_ignored():
    assert guard_violations(RunLog.parse({"forbidden_calls": "junk", "guard_removed_at": "9"}), EDITABLE, []) == []
    assert guard_violations(RunLog.parse({}), EDITABLE, []) == []
    calls = [{"cell": 9, "line": 1, "api": name, "rule": rule} for name, rule in
             (("torch.nn.Linear", "torch-nn"), ("F.cross_entropy", "ready-made"), ("loss.backward", "autograd"),
              ("torch.optim.SGD", "torch-optim"))]
    found = guard_violations(RunLog.parse({"forbidden_calls": calls, "guard_removed_at": 0}), EDITABLE, [])
    assert [v.message for v in found] == [
        "`torch.nn.Linear` was called while your code ran: torch.nn is not allowed",
        "`F.cross_entropy` was called while your code ran: ready-made softmax and losses are not allowed",
        "`loss.backward` was called while your code ran: autograd is not allowed",
        "`torch.optim.SGD` was called while your code ran: torch.optim is not allowed",
        "the grader's run-time guard was removed or disabled by your code"]
    assert (found[-1].owner, found[-1].cell, found[-1].rule) == ("log_softmax", 0, "runtime-guard-removed")


def test_a_guard_violation_costs_the_parts_of_its_cell_in_score():
    log = {"forbidden_calls": [{"cell": 4, "line": 1, "api": "torch.log_softmax", "rule": "ready-made"}]}
    results = by_id(scoring.score(RUBRIC, context(0), guard_violations(RunLog.parse(log), EDITABLE, [])))
    assert {g for g, r in results.items() if g in POINTS and r.score == 0} == COSTS["log_softmax"]
    assert results["test_log_softmax"].lines[0] == CheckLine(
        False, "policy violation in cell 4, line 1: `torch.log_softmax` was called while your code ran: "
               "ready-made softmax and losses are not allowed")
