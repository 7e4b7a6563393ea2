"""Fairness: honest habits never cost a point, and a real bug costs exactly the points of its own parts.

Every honest variant of the complete solution must score exactly 80 with no violation and nothing for a
person to review; every bug loses exactly the parts listed for it and nothing else. All of them are
graded in one parallel batch, in the real sandbox, as a class is."""
from __future__ import annotations

import json

import pytest

from honest_cases import BUGS, HONEST, NOTEBOOKS, together
from support import FULL, grade_catalogue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_catalogue(tmp_path_factory, {**{name: together(habits) for name, habits in NOTEBOOKS.items()},
                                              **{name: edits for name, (edits, _, _) in BUGS.items()}})


def results_of(course, name) -> dict:
    return json.loads((course.root / "autograded" / name / course.assignment / "results.json").read_text())


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_honest_habits_cost_nothing(graded, name):
    course, results = graded
    result, report = results[name], results_of(course, name)
    lost = {part.grade_id: [line.sentence for line in part.lines if not line.passed] for part in result.parts
            if not part.pending and part.score < part.max_score}
    assert (result.score, lost) == (FULL, {}), report["output"]
    assert result.violations == [] and result.review == [], [(i.rule, i.message) for i in result.review]
    assert {message["kind"] for message in report["extra_data"]["messages"]} <= {"pending", "note"}


@pytest.mark.parametrize("name", list(BUGS))
def test_a_bug_costs_exactly_its_own_parts(graded, name):
    _, results = graded
    _, score, parts = BUGS[name]
    result = results[name]
    lost = {part.grade_id for part in result.parts if not part.pending and part.score < part.max_score}
    assert lost == parts, [(p.grade_id, p.score) for p in result.parts if p.score < p.max_score]
    if score is not None:
        assert result.score == score
    assert result.violations == []


def test_the_catalogue_is_big_enough():
    assert len(HONEST) >= 30 and len(BUGS) >= 10


def retraining_differences(results) -> list[float]:
    """The trusted retraining's differences from the students' records, over the graded models."""
    return [line.measured for result in results.values() for part in result.parts for line in part.lines
            if line.condition and line.measured is not None]


def test_honest_training_sits_far_below_the_retraining_tolerance(graded):
    from coursekit.grading.retrain import RETRAIN_RTOL

    _, results = graded
    honest = retraining_differences({name: results[name] for name in NOTEBOOKS})
    print(f"largest difference between an honest model and its trusted retraining: {max(honest):.3g} "
          f"(over {len(honest)} models; tolerance {RETRAIN_RTOL:g})")
    assert len(honest) >= 3 * len(NOTEBOOKS) and max(honest) <= RETRAIN_RTOL / 10
