"""The rules: small functions over a :class:`Context`, registered by node kind
in :data:`REGISTRY` and run in that order by :func:`run_rules`.

Like bandit's plugins, a rule sees one node with its names already resolved
and reports through ``ctx.report``.  Which dotted names are forbidden is data
(:data:`.apis.API_RULES`); the rules here are the checks that need more than
a name: autograd attributes on the right receivers, builtins that hide what
code does, namespace dictionaries, file paths, library patching.  To add a new
kind of check, write a function ``rule(ctx)`` here and add it to the tuple of
its node kind in :data:`REGISTRY`.  A rule may return :data:`STOP` (the node
is fully handled, its children are not visited) or, for calls,
:data:`CLAIMS_FUNCTION` (the called function needs no checks of its own).
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar

from . import magics
from .apis import (
    ATTR_BUILTINS,
    AUTOGRAD_ATTRS,
    AUTOGRAD_BACKWARD_KW,
    DUNDER_ATTR_METHODS,
    DYNAMIC_BUILTINS,
    EXIT_BUILTINS,
    FASTAI_DISTINCTIVE,
    FASTAI_FIT_METHODS,
    FILE_LIBRARIES,
    INTROSPECTION_ATTRS,
    IPYTHON,
    NAMESPACE_MUTATORS,
    READY_MADE,
)
from .resolver import str_const

if TYPE_CHECKING:
    from .visitor import Walker

log = logging.getLogger(__name__)

STOP = "stop"
CLAIMS_FUNCTION = "claims-function"


N = TypeVar("N", bound=ast.AST)


@dataclass
class Context(Generic[N]):
    """One node as the rules see it (a rule of the node kind "name" gets a Context[ast.Name], and so on)."""

    walker: "Walker"
    node: N  # also what a finding quotes, unless `call` is given
    call: Optional[ast.Call] = None  # the call whose function `node` is
    in_resolved_chain: bool = False  # part of a longer dotted name that is classified whole
    claimed: bool = False  # the enclosing call's rules already judged this function
    receiver: Optional[ast.AST] = None  # "attribute-name": `receiver.attr`
    attr: str = ""
    store: bool = False
    imported: str = ""  # "import": the dotted name imported
    spelled: Optional[str] = None  # "import": the statement as the student would write it

    @property
    def resolver(self):
        return self.walker.resolver

    @property
    def facts(self):
        return self.walker.facts

    @property
    def shown(self) -> ast.AST:
        """The node a finding quotes: ``eval("1")`` rather than ``eval``."""
        return self.call if self.call is not None else self.node

    @cached_property
    def path(self) -> Optional[str]:
        return self.resolver.resolve(self.node)

    @cached_property
    def func_path(self: Context[ast.Call]) -> Optional[str]:
        return self.resolver.resolve(self.node.func)

    @cached_property
    def free_func(self: Context[ast.Call]) -> Optional[str]:
        """Name of the called function when it is a builtin (not bound by the student)."""
        f = self.node.func
        return f.id if isinstance(f, ast.Name) and self.resolver.unbound(f.id) else None

    def report(self, rule: str, node=None, detail: str = "", spelled: Optional[str] = None,
               line: Optional[int] = None) -> None:
        self.walker.report(rule, self.node if node is None else node, detail, spelled, line)

    def report_path(self, path: Optional[str], node=None, spelled: Optional[str] = None) -> None:
        self.walker.report_path(path, self.node if node is None else node, spelled)


def run_rules(kind: str, ctx: Context) -> set:
    """Run the rules of one node kind in order; the outcomes they returned."""
    outcomes = set()
    for rule in REGISTRY[kind]:
        try:
            outcome = rule(ctx)
        except (RecursionError, MemoryError):
            raise  # the cell is too big to check, not a bug in one rule: a person reviews the cell
        except Exception:
            log.exception("scan rule %s failed on line %s of cell %s; the other rules go on",
                          rule.__name__, getattr(ctx.node, "lineno", "?"), ctx.walker.cell)
            continue
        if outcome:
            outcomes.add(outcome)
            if outcome == STOP:
                break
    return outcomes


def norm(name: str) -> str:
    return name.strip("_")


def outside_path(s: str) -> bool:
    s = s.strip()
    if s.startswith(("/", "~", "\\")):
        return True
    return ".." in s.replace("\\", "/").split("/")


def literal_outside(node) -> bool:
    """Is ``node`` a literal path (or f-string) outside the assignment folder?"""
    s = str_const(node)
    if s is not None:
        return outside_path(s)
    if isinstance(node, ast.JoinedStr) and node.values:  # f"/abs/{x}", f"{d}/../x"
        head = str_const(node.values[0])
        if head is not None and head.strip().startswith(("/", "~")):
            return True
        parts = [str_const(v) for v in node.values]
        return any(p is not None and ".." in p.replace("\\", "/").split("/") for p in parts)
    return False


# ---- names -------------------------------------------------------------------


def builtins_namespace(ctx: Context[ast.Name]):
    if ctx.node.id == "__builtins__":
        ctx.report("dynamic-code", detail="reaches the builtins directly")


def grader_name(ctx: Context[ast.Name]):
    """``__coursekit_guard``: the grader's own objects in the kernel."""
    if "coursekit" in ctx.node.id.lower():
        ctx.report("introspection", detail="reaches the grader's instrumentation")


def free_builtin(ctx: Context[ast.Name]):
    """Builtins that run code, stop the process or look attributes up by name."""
    name = ctx.node.id
    if name == "__builtins__" or not ctx.resolver.unbound(name):
        return
    if name in DYNAMIC_BUILTINS:
        ctx.report("dynamic-code", ctx.shown, "runs code built at run time")
    elif name in EXIT_BUILTINS:
        ctx.report("process", ctx.shown, "stops the Python process")
    elif name in ATTR_BUILTINS:
        ctx.report("dynamic-code", detail="passes an attribute-lookup builtin around")
    elif name == "set_grad_enabled":
        ctx.report("autograd", ctx.shown, " (`set_grad_enabled`)")


def name_path(ctx: Context[ast.Name]):
    if ctx.node.id != "__builtins__" and not ctx.in_resolved_chain:
        found, path, _ = ctx.resolver.lookup(ctx.node.id)
        if found:
            ctx.report_path(path, ctx.shown)


# ---- attributes ----------------------------------------------------------------


def attribute_path(ctx: Context[ast.Attribute]):
    if ctx.path and not ctx.in_resolved_chain:
        ctx.report_path(ctx.path, ctx.shown)


def attribute_name(ctx: Context[ast.Attribute]):
    """``x.backward``, ``x.softmax``, ``learn.fit``: whatever ``x`` is."""
    node = ctx.node
    run_rules("attribute-name", Context(ctx.walker, ctx.shown, call=ctx.call, receiver=node.value,
                                        attr=node.attr, store=not isinstance(node.ctx, ast.Load)))


def module_namespace(ctx: Context[ast.Attribute]):
    if ctx.node.attr == "__dict__" and ctx.resolver.resolve(ctx.node.value):
        ctx.report("dynamic-code", detail="looks inside a module's namespace")


# ---- attribute names, on any receiver (also `getattr(x, "name")`) ---------------


def autograd_attribute(ctx: Context):
    if ctx.attr in AUTOGRAD_ATTRS and not switches_off(ctx) and is_autograd_use(ctx):
        ctx.report("autograd", detail=f" (`.{ctx.attr}`)")


def switches_off(ctx: Context) -> bool:
    """Reading ``x.requires_grad``, or ``x.requires_grad_(False)``: saying "no gradient" is not autograd."""
    if ctx.attr == "requires_grad":
        return not ctx.store
    call = ctx.call
    return (ctx.attr == "requires_grad_" and call is not None and bool(call.args)
            and isinstance(call.args[0], ast.Constant) and not call.args[0].value)


def introspection_attribute(ctx: Context):
    """``f.__closure__``, ``type(t).__mro__``, ``frame.f_back``: except a student's own ``self.__dict__``."""
    if ctx.attr in INTROSPECTION_ATTRS and not (ctx.attr == "__dict__" and ctx.resolver.is_self(ctx.receiver)):
        ctx.report("introspection", detail="looks inside a function, a type or the running frames")
    elif "coursekit" in ctx.attr.lower():
        ctx.report("introspection", detail="reaches the grader's instrumentation")


def is_autograd_use(ctx: Context) -> bool:
    """Is ``receiver.attr`` (called as ``ctx.call``) autograd?  Only
    ``backward``/``grad`` can be the student's own: on ``self``, or when
    their classes define them and the receiver does not look like a tensor."""
    receiver, attr, call = ctx.receiver, ctx.attr, ctx.call
    if attr not in ("backward", "grad"):
        return True
    if ctx.resolver.is_self(receiver):
        return False
    own = ctx.facts.methods.get(attr, [])
    if not own and attr not in ctx.facts.self_attrs:
        return True
    k = ctx.resolver.kind(receiver)
    if k == "tensor" or ctx.resolver.resolve(receiver):
        return True  # a tensor, torch.Tensor.backward, module attributes
    is_backward_call = call is not None and attr == "backward"
    if call is not None and is_backward_call and _autograd_keyword(call, own):
        return True
    if k == "instance" or not (is_backward_call and own):
        return False
    assert call is not None  # is_backward_call
    if any(isinstance(a, ast.Starred) for a in call.args):
        return False
    return not any(s.accepts(len(call.args)) for s in own)


def _autograd_keyword(call: ast.Call, own: list) -> bool:
    """A keyword of Tensor.backward that none of the student's backward() take."""
    return any(kw.arg in AUTOGRAD_BACKWARD_KW and not any(kw.arg in s.names or s.any_kw for s in own)
               for kw in call.keywords)


def _student_object(ctx: Context) -> bool:
    return (ctx.resolver.is_self(ctx.receiver)
            or ctx.resolver.kind(ctx.receiver) in ("instance", "class"))


def ready_made_method(ctx: Context):
    if not ctx.store and norm(ctx.attr) in READY_MADE and not _student_object(ctx):
        ctx.report("ready-made-function", detail=norm(ctx.attr))


def fastai_fit(ctx: Context):
    if ctx.store or ctx.attr not in FASTAI_FIT_METHODS:
        return
    if (ctx.resolver.kind(ctx.receiver) == "learner"
            or not (_student_object(ctx) or ctx.attr in ctx.facts.methods)):
        ctx.report("fastai-training", detail=f".{ctx.attr}()")


def fastai_distinctive(ctx: Context):
    if not ctx.store and ctx.attr in FASTAI_DISTINCTIVE and not ctx.resolver.is_self(ctx.receiver):
        ctx.report("fastai-training", detail=ctx.attr)


# ---- subscripts ------------------------------------------------------------------


def namespace_subscript(ctx: Context[ast.Subscript]):
    """``globals()["x"] = 1``, ``globals()[name]``; ``globals()["nn"]`` is just ``nn``."""
    node = ctx.node
    if ctx.resolver.namespace_call(node.value):
        if not isinstance(node.ctx, ast.Load) or str_const(node.slice) is None:
            ctx.report("dynamic-code", detail="reads or changes variables through a namespace dictionary")


def subscript_path(ctx: Context[ast.Subscript]):
    if not ctx.in_resolved_chain and str_const(ctx.node.slice) is not None:
        ctx.report_path(ctx.path)


# ---- calls -------------------------------------------------------------------------


def requires_grad_keyword(ctx: Context[ast.Call]):
    """``requires_grad=True`` is autograd, ``requires_grad=False`` is not; a value or ``**`` keywords
    the checker cannot read, passed to torch, go to a person."""
    for kw in ctx.node.keywords:
        if kw.arg == "requires_grad":
            _requires_grad_value(ctx, kw, kw.value)
        elif kw.arg is None:
            keys = _literal_keywords(kw.value)
            if keys is not None and "requires_grad" in keys:
                _requires_grad_value(ctx, kw, keys["requires_grad"])
            elif keys is None and (ctx.func_path or "").startswith("torch."):
                ctx.report("dynamic-code", kw, "passes keywords the checker cannot read (`**`) to torch")


def _requires_grad_value(ctx: Context, node, value) -> None:
    if not isinstance(value, ast.Constant):
        ctx.report("dynamic-code", node, "sets `requires_grad` to a value computed at run time")
    elif value.value:
        ctx.report("autograd", node, " (`requires_grad=`)")


def _literal_keywords(node) -> Optional[dict]:
    """The keywords of ``**{"a": 1}`` or ``**dict(a=1)``, or None when they cannot be read."""
    if isinstance(node, ast.Dict) and all(str_const(k) is not None for k in node.keys):
        return {str_const(k): v for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args and all(kw.arg for kw in node.keywords)):
        return {kw.arg: kw.value for kw in node.keywords}
    return None


def ipython_call(ctx: Context[ast.Call]):
    f = ctx.node.func
    if isinstance(f, ast.Attribute) and ctx.resolver.resolve(f.value) == IPYTHON:
        if magics.ipython_call(ctx.walker, ctx.node, f):
            return STOP


def import_call_path(ctx: Context[ast.Call]):
    """``__import__("torch.nn")``, ``importlib.import_module(...)``."""
    if not ctx.in_resolved_chain:
        ctx.report_path(ctx.path)


def set_grad_enabled(ctx: Context[ast.Call]):
    """``set_grad_enabled(False)`` is allowed, anything else is autograd."""
    fpath = ctx.func_path
    if fpath not in ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled") and (
            ctx.free_func != "set_grad_enabled"):
        return None
    node = ctx.node
    args = list(node.args) + [k.value for k in node.keywords if k.arg == "mode"]
    off = bool(args) and isinstance(args[0], ast.Constant) and args[0].value is False
    if off and fpath != "torch.autograd.set_grad_enabled":
        return CLAIMS_FUNCTION
    ctx.report("autograd", detail=" (`set_grad_enabled`)")


def _attribute_by_name(ctx: Context, receiver, name: Optional[str], store: bool) -> None:
    """``getattr(receiver, "name")`` is ``receiver.name``; a computed name cannot be checked."""
    if name is None:
        ctx.report("dynamic-code", detail="uses an attribute name computed at run time")
        return
    base = ctx.resolver.resolve(receiver)
    if base:
        ctx.report_path(f"{base}.{name}")
    run_rules("attribute-name", Context(ctx.walker, ctx.node, receiver=receiver, attr=name,
                                        store=store))


def attribute_builtins(ctx: Context[ast.Call]):
    name = ctx.free_func
    if name not in ATTR_BUILTINS:
        return None
    args = ctx.node.args
    if len(args) >= 2:
        _attribute_by_name(ctx, args[0], str_const(args[1]), store=name in ("setattr", "delattr"))
    return CLAIMS_FUNCTION


def dunder_attribute_methods(ctx: Context[ast.Call]):
    """``x.__getattribute__("grad")`` and friends."""
    f, args = ctx.node.func, ctx.node.args
    if isinstance(f, ast.Attribute) and f.attr in DUNDER_ATTR_METHODS:
        _attribute_by_name(ctx, f.value, str_const(args[0]) if args else None,
                           store=f.attr in ("__setattr__", "__delattr__"))


def operator_getters(ctx: Context[ast.Call]):
    """``operator.attrgetter("grad")``, ``operator.methodcaller("backward")``."""
    if ctx.func_path not in ("operator.attrgetter", "operator.methodcaller") or not ctx.node.args:
        return
    lit = str_const(ctx.node.args[0])
    if lit is None:
        ctx.report("dynamic-code", detail="uses an attribute name computed at run time")
        return
    for part in lit.split("."):
        if part in AUTOGRAD_ATTRS:
            ctx.report("autograd", detail=f" (`.{part}`)")
        if norm(part) in READY_MADE:
            ctx.report("ready-made-function", detail=norm(part))


def namespace_mutation(ctx: Context[ast.Call]):
    """``globals().update(...)`` and other changes through a namespace dictionary."""
    f = ctx.node.func
    if (isinstance(f, ast.Attribute) and f.attr in NAMESPACE_MUTATORS
            and ctx.resolver.namespace_call(f.value)):
        ctx.report("dynamic-code", detail="changes variables through a namespace dictionary")


def file_paths(ctx: Context[ast.Call]):
    """Files outside the assignment folder, given as literal paths."""
    opens = ctx.free_func == "open"
    fpath = ctx.func_path
    if opens or (fpath and fpath.split(".")[0] in FILE_LIBRARIES):
        args = list(ctx.node.args) + [k.value for k in ctx.node.keywords]
        if any(literal_outside(a) for a in args):
            ctx.report("file-access", detail="uses a file path outside the assignment folder")


# ---- other statements and expressions -------------------------------------------------


def path_division(ctx: Context[ast.BinOp]):
    """``Path("data") / ".."``."""
    if isinstance(ctx.node.op, ast.Div) and literal_outside(ctx.node.right):
        ctx.report("file-access", detail="builds a file path outside the assignment folder")


def monkeypatch(ctx: Context):
    """``torch.allclose = ...``: an assignment to a library's attribute."""
    target = ctx.node
    if isinstance(target, ast.Attribute) and ctx.resolver.resolve(target.value):
        # ctx.path is the target's dotted name, found whenever its value's is; `or ""` would change the message if not
        ctx.report("monkeypatch", detail=ctx.path, spelled=f"{ctx.walker.spell(target)} = ...")  # type: ignore[arg-type]


def namespace_kept(ctx: Context):
    """``g = globals()``: the dictionary can later change any variable."""
    if ctx.resolver.namespace_call(ctx.node, no_args=True):
        ctx.report("dynamic-code", detail="keeps a namespace dictionary to change variables")


def imported_path(ctx: Context):
    ctx.report_path(ctx.imported, spelled=ctx.spelled)


#: node kind -> its rules, in the order they run (the first message for a
#: cell, line and rule is the one kept)
REGISTRY: dict[str, tuple[Callable[[Context[Any]], Optional[str]], ...]] = {
    "name": (builtins_namespace, grader_name, free_builtin, name_path),
    "attribute": (attribute_path, attribute_name, module_namespace),
    "attribute-name": (autograd_attribute, introspection_attribute, ready_made_method, fastai_fit, fastai_distinctive),
    "subscript": (namespace_subscript, subscript_path),
    "call": (requires_grad_keyword, ipython_call, import_call_path, set_grad_enabled,
             attribute_builtins, dunder_attribute_methods, operator_getters,
             namespace_mutation, file_paths),
    "binop": (path_division,),
    "assign-target": (monkeypatch,),
    "binding": (namespace_kept,),
    "import": (imported_path,),
}
