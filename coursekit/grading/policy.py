"""The apply_policy step's rules: which parts a forbidden call costs, and what goes to a person instead.

The course's rule, as the notebook states it: a forbidden call costs the points of the parts whose
code it runs in. Inside one of the names the student implements (a layer, a loss, `sgd_step`,
`train`, `accuracy`, `log_softmax`, or a helper that one of them uses), it costs that name's part and
every part that uses it; at the top level of a cell that builds or trains a graded model, that
model's part. Anywhere else (a cell that only plots, prints or explores, the optional extension) it
costs nothing and is listed for a person to review. An implemented name or a graded model defined
outside its own solution cell is listed for review too.

Where a finding is: the static scan gives a cell and a line, which the cell's outline turns into
the definition around it; the run-time guard also reports the student's functions that were on the
stack (`within`), so a call in a helper shared by several cells is tied to the name that called it.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field

from coursekit.grading.sanitize import EditableCell
from coursekit.grading.scan import Finding
from coursekit.grading.scan.cells import PARSE_ERRORS, prepare, units
from coursekit.in_sandbox.protocol import RunLog

IMPLEMENTED = {"Linear": "linear", "ReLU": "relu", "Sequential": "sequential", "log_softmax": "log_softmax",
               "MSELoss": "mse_loss", "CrossEntropyLoss": "cross_entropy_loss", "sgd_step": "sgd_step",
               "train": "train", "accuracy": "accuracy"}  # name -> its solution cell
MODELS = {"regression_model": "regression", "logistic_model": "logistic", "mlp_model": "mlp"}
TRAINERS = ("train", "sgd_step")
GUARD_RULES = {"torch-nn": "torch.nn is not allowed", "ready-made": "ready-made softmax and losses are not allowed",
               "autograd": "autograd is not allowed", "torch-optim": "torch.optim is not allowed"}


@dataclass
class Violation:
    touches: tuple[str, ...]  # the implemented names and graded models whose code it is in (none: not costed)
    cell: int
    line: int | None
    message: str
    rule: str = "autograd-at-run-time"


@dataclass(frozen=True)
class Definition:
    name: str
    first: int  # the student's lines
    last: int
    mentions: frozenset[str]  # names used inside it


@dataclass
class Outline:
    """What a cell's top level defines, and which graded models it builds or trains."""

    definitions: list[Definition] = field(default_factory=list)
    models: set[str] = field(default_factory=set)    # assigned, or passed to train or sgd_step
    assigned: set[str] = field(default_factory=set)  # assigned

    def enclosing(self, line: int | None) -> Definition | None:
        return next((d for d in self.definitions if line is not None and d.first <= line <= d.last), None)


def outline(source: str) -> Outline:
    found = Outline()
    try:
        parsed = list(units(prepare(source)))
    except PARSE_ERRORS:
        return found
    for unit in parsed:
        for node in unit.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mentions = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
                found.definitions.append(Definition(node.name, unit.line_of(node.lineno),
                                                    unit.line_of(node.end_lineno or node.lineno), mentions))
            else:
                assigned = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                found.assigned |= assigned & set(MODELS)
                found.models |= (assigned | trained(node)) & set(MODELS)
    return found


def trained(node: ast.AST) -> set[str]:
    """Names passed as the model to train or sgd_step in a statement."""
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in TRAINERS and n.args]
    return {n.id for call in calls for n in ast.walk(call.args[0]) if isinstance(n, ast.Name)}


class Notebook:
    """The student's editable cells, outlined once."""

    def __init__(self, editable: list[EditableCell]):
        self.editable = editable
        self.outlines = {cell.index: outline(cell.source) for cell in editable}
        self.definitions = [d for o in self.outlines.values() for d in o.definitions]

    def users(self, helpers: set[str]) -> set[str]:
        """The implemented names whose definitions use these helpers, directly or through others."""
        reached, frontier = set(helpers), set(helpers)
        while frontier:
            frontier = {d.name for d in self.definitions if d.mentions & frontier and d.name not in reached}
            reached |= frontier
        return reached & set(IMPLEMENTED)

    def touched(self, cell: int, line: int | None, within: Sequence[str] = ()) -> tuple[str, ...]:
        """What a forbidden call at (cell, line), made inside the student's functions `within`, touches."""
        names = set(within) or {d.name for d in [self.outlines.get(cell, Outline()).enclosing(line)] if d}
        if names:
            return tuple(sorted((names & set(IMPLEMENTED)) | self.users(names - set(IMPLEMENTED))))
        return tuple(sorted(self.outlines.get(cell, Outline()).models))

    def cell_touches(self, cell: int) -> tuple[str, ...]:
        """What a cell touches as a whole: the names it implements and the models it builds."""
        found = self.outlines.get(cell, Outline())
        return tuple(sorted(({d.name for d in found.definitions} & set(IMPLEMENTED)) | found.models))


def find_violations(findings: list[Finding], log: RunLog | None, editable: list[EditableCell],
                    no_autograd: bool) -> list[Violation]:
    """Every forbidden thing found, each with what it touches: the scan's, autograd in use after a
    cell, the run-time guard's records (minus lines the scan reported), a removed guard."""
    notebook = Notebook(editable)
    found = [Violation(notebook.touched(f.cell, f.line), f.cell, f.line, f.message, f.rule)
             for f in findings if f.severity == "violation"]
    if log is not None:
        if no_autograd:
            found += [Violation(notebook.cell_touches(entry.cell), entry.cell, None,
                                f"after this cell ran, autograd was in use: {str(list(entry.found))[:300]}")
                      for entry in log.runtime_violations]
        found += guard_violations(log, notebook, {(v.cell, v.line) for v in found})
    return found


def guard_violations(log: RunLog, notebook: Notebook, reported: set) -> list[Violation]:
    """The run-time guard's records: forbidden calls made by the student's code (in an editable cell,
    or by code created at run time), except where the static scan already reported that line."""
    cells, found = {c.index for c in notebook.editable}, []
    for call in log.forbidden_calls:
        if not (call.dynamic or call.cell in cells) or (call.cell, call.line) in reported:
            continue
        line = None if call.dynamic else call.line
        how = "by code created at run time (exec, eval...) " if call.dynamic else ""
        found.append(
            Violation(
                notebook.touched(call.cell, line, call.within),
                call.cell,
                line,
                f"`{call.api}` was called {how}while your code ran: {GUARD_RULES[call.rule]}",
                f"runtime-{call.rule}",
            )
        )
    removed = log.guard_removed_at
    if removed is not None:
        found.append(
            Violation(
                notebook.cell_touches(removed),
                removed,
                None,
                "the grader's run-time guard was removed or disabled by your code",
                "runtime-guard-removed",
            )
        )
    return found


def redefinitions(editable: list[EditableCell]) -> list[Violation]:
    """Implemented names and graded models defined at the top level of a cell that is not their own
    solution cell (for review: the grader scores whatever the name holds at the end)."""
    own, notebook, found = {**IMPLEMENTED, **MODELS}, Notebook(editable), []
    for cell in editable:
        cell_outline = notebook.outlines[cell.index]
        defined: list[tuple[str, int | None]] = [
            (d.name, d.first) for d in cell_outline.definitions if d.name in IMPLEMENTED
        ]
        defined += [(model, None) for model in sorted(cell_outline.assigned)]
        found += [Violation((), cell.index, line, f"`{name}` is defined here, outside its own answer cell "
                            f"('{own[name]}'): the grader uses whatever `{name}` holds at the end", "redefinition")
                  for name, line in defined if cell.grade_id != own[name]]
    return found
