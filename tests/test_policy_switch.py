"""The course switch `no_autograd = false` reaches the sandbox: autograd is allowed at run time and in
the probes, while torch.nn, torch.optim and ready-made losses stay forbidden (statically and at run time)."""
from __future__ import annotations

import shutil

import nbformat
import pytest

from attack_cases import EXPECTED
from conftest import ROOT
from coursekit.config import Course
from coursekit.examples import build
from coursekit.grading.batch import grade_class
from support import FULL

pytestmark = pytest.mark.slow

WITH_AUTOGRAD_ALLOWED = {
    "bob_uses_autograd": FULL,
    "uses_torch_nn_loss": EXPECTED["uses_torch_nn_loss"].score,
    "getattr_hides_a_forbidden_call": EXPECTED["getattr_hides_a_forbidden_call"].score,
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "course.toml").write_text(
        (ROOT / "course.toml").read_text().replace("no_autograd = true", "no_autograd = false")
    )
    course = Course(root)
    assert course.settings.no_autograd is False
    shutil.copytree(ROOT / "submitted" / "bob_uses_autograd", root / "submitted" / "bob_uses_autograd")
    for name in WITH_AUTOGRAD_ALLOWED:
        if EXPECTED[name].edits:
            course.submission(name).mkdir(parents=True)
            nbformat.write(build(course, EXPECTED[name].edits), course.submission(name) / course.notebook_name)
    return {r.student: r for r in grade_class(course, jobs=2, require_sandbox=True, progress=False)}


@pytest.mark.parametrize("name", list(WITH_AUTOGRAD_ALLOWED))
def test_scores_with_autograd_allowed(graded, name):
    result = graded[name]
    assert result.score == WITH_AUTOGRAD_ALLOWED[name], "\n".join(result.notes + [v.message for v in result.violations])


def test_autograd_is_no_violation_when_allowed(graded):
    assert graded["bob_uses_autograd"].violations == []
    assert {v.rule for v in graded["getattr_hides_a_forbidden_call"].violations} == {"runtime-ready-made"}
