"""The one visitor: walks a notebook's cells, expanded into steps (see
:mod:`.magics`), in order, keeps names resolved (see :mod:`.resolver`) and, at
every node a check may care about, builds a :class:`~.rules.Context` and runs
the checks registered for that kind of node (see :mod:`.rules`).  It turns
what they return into findings: their line in the student's cell, the spelling
quoted in the message, and de-duplication (one finding per cell, line and
rule: the first in walk order; among one node's hits, a dotted name of the
policy table first, then by the check's name).

When a name is part of a longer dotted name, the visitor tells the checks
(``in_resolved_chain``) so that only the outermost spelling is classified:
``torch.nn.functional.relu`` is reported once, as itself.  When a call's
checks say all there is about its function (``getattr(x, "a")``,
``set_grad_enabled(False)``: :func:`~.rules.judges_its_function`), the
function is not checked again.  A ``get_ipython()`` call that :mod:`.magics`
expanded is replaced by its expansion.
"""

from __future__ import annotations

import ast
from typing import Callable, Optional

from .apis import IPYTHON
from .cells import Broken, Place, Unit
from .facts import Facts
from .findings import RULES, UNPARSABLE, Finding, Hit, ScanPolicy, message, syntax_message
from .resolver import Resolver, ScopedVisitor, target_names
from .rules import Context, judges_its_function, run_checks


def precedence(hit: Hit) -> tuple[bool, str]:
    """Which of one node's hits for the same line and rule is kept: the policy table's, then by check."""
    return not hit.named, hit.check


class Walker(ScopedVisitor):
    def __init__(self, policy: ScanPolicy, facts: Facts):
        self.policy = policy
        self.facts = facts
        self.resolver = Resolver(facts)
        self.findings: dict[tuple, Finding] = {}
        self.cell = -1
        self.reporting = False  # off while walking the preamble
        self.cell_lines: list[str] = []
        self.place: Optional[Place] = None

    # ---- findings ----------------------------------------------------------

    def at(self) -> Place:
        """The unit being walked, and its cell."""
        assert self.place is not None  # set by run_unit before any node is visited
        return self.place

    def context(self, node: ast.AST, **roles) -> Context:
        return Context(self.resolver, self.facts, self.at(), node, **roles)

    def emit(self, hits: list[Hit]) -> None:
        for hit in sorted(hits, key=precedence):
            self.report(hit)

    def report(self, hit: Hit) -> None:
        if not self.reporting or (hit.rule == "autograd" and not self.policy.no_autograd):
            return
        line = hit.line if hit.line is not None else self.at().line(hit.node)
        key = (self.cell, line, hit.rule)
        if key not in self.findings:
            text = hit.spelled if hit.spelled is not None else self.at().spell(hit.node)
            self.findings[key] = Finding(RULES[hit.rule], hit.rule, self.cell, line,
                                         message(hit.rule, text, hit.detail), hit.check)

    def report_broken(self, broken: Broken) -> None:
        if self.reporting:
            key = (self.cell, broken.line, "syntax")
            self.findings.setdefault(key, Finding(UNPARSABLE, "syntax", self.cell, broken.line,
                                                  syntax_message(broken.error, broken.syntax), "parse"))

    # ---- steps -------------------------------------------------------------

    def run_steps(self, steps: list) -> None:
        for step in steps:
            if isinstance(step, Unit):
                self.run_unit(step)
            elif isinstance(step, Broken):
                self.report_broken(step)
            elif isinstance(step, Hit):
                self.report(step)
            else:
                self.visit(step)

    def run_unit(self, unit: Unit) -> None:
        prev, self.place = self.place, Place(unit, self.cell, self.cell_lines)
        try:
            for stmt in unit.tree.body:
                self.visit(stmt)
        finally:
            self.place = prev

    # ---- nodes the checks look at ------------------------------------------------

    def visit_role(self, node, call: Optional[ast.Call] = None, in_resolved_chain: bool = False,
                   claimed: bool = False) -> None:
        """Visit a child whose parent decided something about it."""
        visitors: dict[type, Callable[..., None]] = {ast.Name: self.visit_Name, ast.Attribute: self.visit_Attribute,
                                                     ast.Call: self.visit_Call, ast.Subscript: self.visit_Subscript}
        visit = visitors.get(type(node))
        if visit is None:
            self.visit(node)
        else:
            visit(node, self.context(node, call=call, in_resolved_chain=in_resolved_chain, claimed=claimed))

    def visit_Name(self, node: ast.Name, ctx: Optional[Context] = None) -> None:
        ctx = ctx or self.context(node)
        if isinstance(node.ctx, ast.Load) and not ctx.claimed:
            self.emit(run_checks("name", ctx))

    def visit_Attribute(self, node: ast.Attribute, ctx: Optional[Context] = None) -> None:
        ctx = ctx or self.context(node)
        if ctx.claimed:
            value_in_chain = True
        else:
            value_in_chain = (isinstance(node.value, (ast.Name, ast.Attribute))
                              and bool(ctx.path or ctx.in_resolved_chain))
            self.emit(run_checks("attribute", ctx))
        self.visit_role(node.value, in_resolved_chain=value_in_chain)

    def visit_Subscript(self, node: ast.Subscript, ctx: Optional[Context] = None) -> None:
        self.emit(run_checks("subscript", ctx or self.context(node)))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call, ctx: Optional[Context] = None) -> None:
        ctx = ctx or self.context(node)
        expansion = self.ipython_expansion(node)
        if expansion is not None:
            self.emit(run_checks("ipython-call", ctx))
            self.run_steps(expansion)
            return
        self.emit(run_checks("call", ctx))
        self.visit_role(node.func, call=node, claimed=judges_its_function(ctx))
        for child in node.args + node.keywords:
            self.visit(child)

    def ipython_expansion(self, node: ast.Call) -> Optional[list]:
        """What magics.expand made of this call, when it is a call of get_ipython()'s."""
        expansion = self.at().unit.magics.get(node)
        if expansion is None or not isinstance(node.func, ast.Attribute):
            return None
        return expansion if self.resolver.resolve(node.func.value) == IPYTHON else None

    def visit_BinOp(self, node: ast.BinOp) -> None:
        self.emit(run_checks("binop", self.context(node)))
        self.generic_visit(node)

    # ---- imports and assignments: rules, then bindings -----------------------

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            spelled = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
            self.emit(run_checks("import", self.context(a if hasattr(a, "lineno") else node,
                                                         imported=a.name, spelled=spelled)))
            self.resolver.bind_import(a)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        for a in node.names:
            if node.level:  # relative: the student's own module
                if a.name != "*":
                    self.resolver.bind(a.asname or a.name)
                continue
            where = a if hasattr(a, "lineno") else node
            if a.name == "*":
                self.emit(run_checks("import", self.context(where, imported=mod, spelled=f"from {mod} import *")))
                self.resolver.bind_star(mod)
                continue
            spelled = f"from {mod} import {a.name}" + (f" as {a.asname}" if a.asname else "")
            self.emit(run_checks("import", self.context(where, imported=f"{mod}.{a.name}", spelled=spelled)))
            self.resolver.bind(a.asname or a.name, f"{mod}.{a.name}")

    def assign(self, target, value) -> None:
        """Bind the names of ``target = value``, pairing up tuple elements."""
        if isinstance(target, ast.Name):
            if value is not None:
                self.emit(run_checks("binding", self.context(value)))
            self.resolver.bind(target.id, self.resolver.resolve(value) if value is not None else None,
                               self.resolver.kind(value) if value is not None else None)
        elif isinstance(target, (ast.Tuple, ast.List)):
            vals = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            if (vals is not None and len(vals) == len(target.elts)
                    and not any(isinstance(e, ast.Starred) for e in target.elts + vals)):
                for t, v in zip(target.elts, vals):
                    self.assign(t, v)
            else:
                for n in target_names(target):
                    self.resolver.bind(n)
        elif isinstance(target, ast.Starred):
            for n in target_names(target):
                self.resolver.bind(n)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.emit(run_checks("assign-target", self.context(t)))
            self.assign(t, node.value)
            self.visit(t)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.assign(node.target, node.value)
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.assign(node.target, node.value)
