"""Pre-pass over every cell: what the student defines, independent of order.

The rules use these facts to tell the student's own ``backward``/``grad``
from autograd's (their classes, their methods' signatures, the attributes
they set on ``self``), and the resolver lets a top-level ``def``/``class``
shadow a name of the fastai star import wherever in the notebook it is.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

_BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Signature:
    """How many positional arguments, and which keywords, a method accepts."""

    min_pos: int
    max_pos: float
    names: frozenset
    any_kw: bool

    def accepts(self, npos: int) -> bool:
        return self.min_pos <= npos <= self.max_pos


def signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Signature:
    a = fn.args
    pos = list(a.posonlyargs) + list(a.args)
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                    for d in fn.decorator_list)
    if pos and not is_static:
        pos = pos[1:]  # self
    min_pos = max(len(pos) - len(a.defaults), 0)
    max_pos = float("inf") if a.vararg else len(pos)
    names = frozenset(x.arg for x in pos + list(a.kwonlyargs))
    return Signature(min_pos, max_pos, names, a.kwarg is not None)


@dataclass
class Facts:
    classes: set = field(default_factory=set)
    methods: dict = field(default_factory=dict)  # method name -> [Signature]
    self_attrs: set = field(default_factory=set)  # attrs assigned on self
    toplevel_defs: set = field(default_factory=set)

    def add(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                self.classes.add(node.name)
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.methods.setdefault(item.name, []).append(signature(item))
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                self.self_attrs.add(node.attr)
        self._add_toplevel_defs(tree)

    def _add_toplevel_defs(self, tree: ast.Module) -> None:
        """Defs at module level, also inside if/for/while/with/try blocks."""
        stack = list(tree.body)
        while stack:
            st = stack.pop()
            if isinstance(st, _DEFS):
                self.toplevel_defs.add(st.name)
            elif isinstance(st, _BLOCKS):
                for attr in ("body", "orelse", "finalbody"):
                    stack.extend(getattr(st, attr, []) or [])
                for handler in getattr(st, "handlers", []) or []:
                    stack.extend(handler.body)
