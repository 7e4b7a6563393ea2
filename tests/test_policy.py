"""Where a violation counts (coursekit/grading/policy.py): what each finding touches, which findings cost
nothing and go to a person instead, and graded names redefined outside their own answer cell."""
from __future__ import annotations

from coursekit.grading.policy import Notebook, find_violations, outline, redefinitions
from coursekit.grading.sanitize import EditableCell
from coursekit.grading.scan import Finding
from coursekit.in_sandbox.protocol import RunLog

HELPER = "def stable_exp(z):\n    return torch.exp(z - z.max())\n"
LINEAR = ("class Linear:\n    def forward(self, x):\n        return stable_exp(x)\n\n"
          "    def backward(self, g):\n        return g.softmax(1)\n")
TRAIN = "def train(model, x):\n    loss.backward()\n    return []\n"
MLP = "%%time\nmlp_model = Sequential(Linear(784, 30))\nmlp_losses = train(mlp_model, x)\nprint(mlp_model)\n"
PLOT = (
    "import matplotlib.pyplot as plt\nplt.plot(torch.softmax(z, 1)[0])\nlogistic_losses += train(logistic_model, x)\n"
)
EDITABLE = [EditableCell(10, HELPER, "linear"), EditableCell(12, LINEAR, "linear", "linear"),
            EditableCell(30, TRAIN, "train", "train"), EditableCell(70, MLP, "mlp", "mlp"),
            EditableCell(71, "plt.imshow(torch.softmax(w, 0))", "mlp"), EditableCell(72, PLOT, "mlp")]


def test_a_cells_outline_names_its_definitions_and_the_models_it_builds_or_trains():
    cell = outline(MLP)
    assert (cell.definitions, cell.models, cell.assigned) == ([], {"mlp_model"}, {"mlp_model"})
    assert [(d.name, d.first, d.last) for d in outline(LINEAR).definitions] == [("Linear", 1, 6)]
    assert (outline(PLOT).models, outline(PLOT).assigned) == ({"logistic_model"}, set())
    assert outline("def broken(:\n").definitions == []


def test_what_a_finding_touches_follows_the_definition_around_it():
    notebook = Notebook(EDITABLE)
    assert notebook.touched(12, 6) == ("Linear",)
    assert notebook.touched(30, 2) == ("train",)
    assert notebook.touched(10, 2) == ("Linear",)  # a helper touches what uses it, in any cell
    assert notebook.touched(70, 3) == ("mlp_model",)  # top-level code: the models its cell builds
    assert notebook.touched(71, 1) == ()  # a cell that only plots
    assert notebook.touched(72, 2) == ("logistic_model",)  # its cell trains logistic_model again


def test_what_a_run_time_call_touches_follows_the_students_functions_on_its_way():
    notebook = Notebook(EDITABLE)
    assert notebook.touched(71, None, ["stable_exp", "Linear"]) == ("Linear",)
    assert notebook.touched(71, None, ["plot_helper"]) == ()


def test_scan_and_guard_findings_become_violations_with_what_they_touch():
    findings = [Finding("violation", "autograd", 30, 2, "loss.backward() uses autograd"),
                Finding("violation", "ready-made-function", 71, 1, "softmax is ready-made"),
                Finding("suspicious", "dynamic-code", 30, 1, "eval hides code")]
    log = RunLog.from_json({
        "forbidden_calls": [
            # the scan's line
            {"cell": 30, "line": 2, "api": "torch.Tensor.backward", "rule": "autograd", "within": ["train"]},
            {"cell": 12, "line": 3, "api": "torch.exp", "rule": "not-a-rule"},
            {"cell": 5, "line": 1, "api": "torch.log_softmax", "rule": "ready-made"},  # a provided cell
            {"cell": 72, "line": 9, "api": "torch.log_softmax", "rule": "ready-made", "dynamic": True,
             "within": ["helper"]},
            {"cell": 10, "line": 2, "api": "torch.softmax", "rule": "ready-made", "within": ["stable_exp", "Linear"]},
        ],
        "runtime_violations": [{"cell": 70, "found": ["grad mode is on"]}],
        "guard_removed_at": 71,
    })
    found = find_violations(findings, log, EDITABLE, no_autograd=True)
    assert [(v.touches, v.cell, v.line, v.rule) for v in found] == [
        (("train",), 30, 2, "autograd"), ((), 71, 1, "ready-made-function"),
        (("mlp_model",), 70, None, "autograd-at-run-time"),
        ((), 72, None, "runtime-ready-made"), (("Linear",), 10, 2, "runtime-ready-made"),
        ((), 71, None, "runtime-guard-removed")]
    assert found[3].message == ("`torch.log_softmax` was called by code created at run time (exec, eval...) "
                                "while your code ran: ready-made softmax and losses are not allowed")


def test_autograd_in_use_is_no_violation_where_the_course_allows_autograd():
    log = RunLog.from_json({"runtime_violations": [{"cell": 70, "found": ["grad mode is on"]}]})
    assert find_violations([], log, EDITABLE, no_autograd=False) == []


def test_malformed_guard_records_are_ignored():
    log = RunLog.from_json({"forbidden_calls": "junk", "guard_removed_at": "9"})
    assert find_violations([], log, EDITABLE, True) == []
    assert find_violations([], RunLog.from_json({"forbidden_calls": [{"cell": "12"}, 3]}), EDITABLE, True) == []


def test_graded_names_defined_outside_their_own_answer_cell_are_for_review():
    cells = [EditableCell(30, TRAIN, "train", "train"), EditableCell(31, TRAIN, "train"),
             EditableCell(70, MLP, "mlp", "mlp"), EditableCell(80, MLP, "mlp"), EditableCell(81, PLOT, "mlp")]
    found = redefinitions(cells)
    assert [(v.touches, v.cell, v.line, v.rule) for v in found] == [
        ((), 31, 1, "redefinition"),
        ((), 80, None, "redefinition"),
    ]
    assert found[0].message == ("`train` is defined here, outside its own answer cell ('train'): "
                                "the grader uses whatever `train` holds at the end")
