"""The honest catalogue's notebooks (tests/honest_cases.py) are what they claim: fast, without grading."""
from __future__ import annotations

from attack_cases import EXPECTED
from conftest import ROOT
from coursekit.config import Course
from coursekit.examples import build, solved
from honest_cases import BUGS, HONEST, NOTEBOOKS, WHOLE_NOTEBOOK, together


def test_each_habit_is_in_one_notebook_and_keeps_its_cells_there():
    assert sorted(habit for habits in NOTEBOOKS.values() for habit in habits) == sorted(HONEST)
    course = Course(ROOT)
    complete = {cell.source for cell in solved(course).cells}
    for name, habits in NOTEBOOKS.items():
        shared = [cell.source for cell in build(course, together(habits)).cells]
        for habit in habits:
            if set(HONEST[habit]) & set(WHOLE_NOTEBOOK):
                continue
            changed = [cell.source for cell in build(course, HONEST[habit]).cells if cell.source not in complete]
            missing = [source for source in changed if not any(source in other for other in shared)]
            assert changed and not missing, (name, habit, missing)


def test_every_catalogue_notebook_can_be_built():
    """Each edit finds its cell and its text (examples.replace refuses a text that is not there), so a
    change of the solution that breaks an attack or a habit fails here, not after an hour of grading."""
    course = Course(ROOT)
    cases = {**{name: case.edits for name, case in EXPECTED.items() if case.edits},
             **{name: together(habits) for name, habits in NOTEBOOKS.items()},
             **{name: edits for name, (edits, _, _) in BUGS.items()}}
    for name, edits in cases.items():
        assert build(course, edits).cells, name
