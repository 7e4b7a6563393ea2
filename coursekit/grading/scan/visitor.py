"""The one visitor: walks a notebook's parsed cells in order, keeps names
resolved (see :mod:`.resolver`) and, at every node a rule may care about,
builds a :class:`~.rules.Context` and runs the rules registered for that kind
of node (see :mod:`.rules`).  It also owns the findings: their line in the
student's cell, the spelling quoted in the message, and de-duplication (one
finding per cell, line and rule; the first message wins).

When a name is part of a longer dotted name, the visitor tells the rules
(``in_resolved_chain``) so that only the outermost spelling is classified:
``torch.nn.functional.relu`` is reported once, as itself.  When a call's
rules have already judged its function (``getattr(x, "a")``,
``set_grad_enabled(False)``), the function is not checked again.
"""

from __future__ import annotations

import ast
from typing import Callable, Optional

from . import magics
from .apis import classify
from .cells import Broken, CellMagic, Unit
from .facts import Facts
from .findings import RULES, UNPARSABLE, Finding, ScanPolicy, message, syntax_message
from .resolver import Resolver, ScopedVisitor, target_names
from .rules import CLAIMS_FUNCTION, STOP, Context, run_rules


class Walker(ScopedVisitor):
    def __init__(self, policy: ScanPolicy, facts: Facts):
        self.policy = policy
        self.facts = facts
        self.resolver = Resolver(facts)
        self.findings: dict[tuple, Finding] = {}
        self.cell = -1
        self.reporting = False  # off while walking the preamble
        self.cell_lines: list[str] = []
        self.unit: Optional[Unit] = None

    # ---- findings ----------------------------------------------------------

    def line(self, node) -> int:
        assert self.unit is not None  # set by run_unit before any node is visited
        return self.unit.line_of(getattr(node, "lineno", 1) or 1)

    def spell(self, node) -> str:
        """The student's spelling of a node (their line, for IPython syntax)."""
        assert self.unit is not None  # set by run_unit before any node is visited
        n = getattr(node, "lineno", None)
        if n is not None and n in self.unit.generated:
            ln = self.unit.line_of(n)
            if 1 <= ln <= len(self.cell_lines):
                return self.cell_lines[ln - 1].strip()
        try:
            seg = ast.get_source_segment(self.unit.text, node)
        except Exception:
            seg = None
        if not seg:
            try:
                seg = ast.unparse(node)
            except Exception:
                seg = type(node).__name__
        return seg

    def report(self, rule: str, node, detail: str = "", spelled: Optional[str] = None,
               line: Optional[int] = None) -> None:
        if not self.reporting or (rule == "autograd" and not self.policy.no_autograd):
            return
        ln = line if line is not None else self.line(node)
        key = (self.cell, ln, rule)
        if key not in self.findings:
            text = spelled if spelled is not None else self.spell(node)
            self.findings[key] = Finding(RULES[rule], rule, self.cell, ln,
                                         message(rule, text, detail))

    def report_path(self, path: Optional[str], node, spelled: Optional[str] = None) -> None:
        hit = classify(path)
        if hit:
            self.report(hit[0], node, hit[1], spelled)

    def report_broken(self, broken: Broken) -> None:
        if self.reporting:
            key = (self.cell, broken.line, "syntax")
            self.findings.setdefault(key, Finding(UNPARSABLE, "syntax", self.cell, broken.line,
                                                  syntax_message(broken.error, broken.syntax)))

    # ---- units of code -----------------------------------------------------

    def run_items(self, items: list) -> None:
        for item in items:
            if isinstance(item, Unit):
                self.run_unit(item)
            elif isinstance(item, CellMagic):
                magics.cell_magic(self, item)
            elif isinstance(item, Broken):
                self.report_broken(item)

    def run_unit(self, unit: Unit) -> None:
        prev, self.unit = self.unit, unit
        try:
            for stmt in unit.tree.body:
                self.visit(stmt)
        finally:
            self.unit = prev

    # ---- nodes the rules look at ---------------------------------------------

    def visit_role(self, node, call: Optional[ast.Call] = None, in_resolved_chain: bool = False,
                   claimed: bool = False) -> None:
        """Visit a child whose parent decided something about it."""
        visitors: dict[type, Callable[..., None]] = {ast.Name: self.visit_Name, ast.Attribute: self.visit_Attribute,
                                                     ast.Call: self.visit_Call, ast.Subscript: self.visit_Subscript}
        visit = visitors.get(type(node))
        if visit is None:
            self.visit(node)
        else:
            visit(node, Context(self, node, call=call, in_resolved_chain=in_resolved_chain,
                                claimed=claimed))

    def visit_Name(self, node: ast.Name, ctx: Optional[Context] = None) -> None:
        ctx = ctx or Context(self, node)
        if isinstance(node.ctx, ast.Load) and not ctx.claimed:
            run_rules("name", ctx)

    def visit_Attribute(self, node: ast.Attribute, ctx: Optional[Context] = None) -> None:
        ctx = ctx or Context(self, node)
        if ctx.claimed:
            value_in_chain = True
        else:
            value_in_chain = (isinstance(node.value, (ast.Name, ast.Attribute))
                              and bool(ctx.path or ctx.in_resolved_chain))
            run_rules("attribute", ctx)
        self.visit_role(node.value, in_resolved_chain=value_in_chain)

    def visit_Subscript(self, node: ast.Subscript, ctx: Optional[Context] = None) -> None:
        run_rules("subscript", ctx or Context(self, node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call, ctx: Optional[Context] = None) -> None:
        outcomes = run_rules("call", ctx or Context(self, node))
        if STOP in outcomes:
            return
        self.visit_role(node.func, call=node, claimed=CLAIMS_FUNCTION in outcomes)
        for child in node.args + node.keywords:
            self.visit(child)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        run_rules("binop", Context(self, node))
        self.generic_visit(node)

    # ---- imports and assignments: rules, then bindings -----------------------

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            spelled = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
            run_rules("import", Context(self, a if hasattr(a, "lineno") else node,
                                        imported=a.name, spelled=spelled))
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
                run_rules("import", Context(self, where, imported=mod,
                                            spelled=f"from {mod} import *"))
                self.resolver.bind_star(mod)
                continue
            spelled = f"from {mod} import {a.name}" + (f" as {a.asname}" if a.asname else "")
            run_rules("import", Context(self, where, imported=f"{mod}.{a.name}", spelled=spelled))
            self.resolver.bind(a.asname or a.name, f"{mod}.{a.name}")

    def assign(self, target, value) -> None:
        """Bind the names of ``target = value``, pairing up tuple elements."""
        if isinstance(target, ast.Name):
            if value is not None:
                run_rules("binding", Context(self, value))
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
            run_rules("assign-target", Context(self, t))
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
