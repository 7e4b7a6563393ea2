"""The checks: small functions over a :class:`Context`, registered by node kind
in :data:`REGISTRY` and run by :func:`run_checks`.

Like bandit's plugins, a check sees one node with its names already resolved
and returns what it found, as :class:`~.findings.Hit` values; it never reports
through the walker, never walks, and cannot change what the walker visits, so
the order of the checks in the registry changes nothing.  Which dotted names
are forbidden is data (:data:`.apis.API_RULES`); the checks here are those
that need more than a name: autograd attributes on the right receivers,
builtins that hide what code does, namespace dictionaries, file paths, library
patching.  To add one, write a function ``check(ctx) -> list[Hit]`` here and
add it to the tuple of its node kind in :data:`REGISTRY`.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable, Generic, Optional, TypeVar

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
    NAMESPACE_MUTATORS,
    READY_MADE,
    classify,
)
from .cells import Place
from .facts import Facts
from .findings import Hit
from .resolver import Resolver, str_const

log = logging.getLogger(__name__)

N = TypeVar("N", bound=ast.AST)


@dataclass
class Context(Generic[N]):
    """One node as the checks see it (a check of the node kind "name" gets a Context[ast.Name], and so on)."""

    resolver: Resolver
    facts: Facts
    place: Place  # where the node is; how the student spelled it
    node: N  # also what a finding quotes, unless `call` is given
    call: Optional[ast.Call] = None  # the call whose function `node` is
    in_resolved_chain: bool = False  # part of a longer dotted name that is classified whole
    claimed: bool = False  # the enclosing call's checks already judged this function
    receiver: Optional[ast.AST] = None  # "attribute-name": `receiver.attr`
    attr: str = ""
    store: bool = False
    imported: str = ""  # "import": the dotted name imported
    spelled: Optional[str] = None  # "import": the statement as the student would write it

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

    def hit(self, rule: str, node: Optional[ast.AST] = None, detail: str = "", spelled: Optional[str] = None) -> Hit:
        return Hit(rule, self.node if node is None else node, detail, spelled)

    def path_hits(self, path: Optional[str], node: Optional[ast.AST] = None,
                  spelled: Optional[str] = None) -> list[Hit]:
        """The policy table's finding for a dotted name, if it has one."""
        found = classify(path)
        if not found:
            return []
        return [Hit(found[0], self.node if node is None else node, found[1], spelled, named=True)]

    def attribute_named(self, node: ast.AST, receiver: ast.AST, attr: str, store: bool,
                        call: Optional[ast.Call] = None) -> Context:
        """The context of ``receiver.attr`` for the "attribute-name" checks; ``node`` is what they quote."""
        return Context(self.resolver, self.facts, self.place, node, call=call, receiver=receiver, attr=attr,
                       store=store)


Check = Callable[[Context[Any]], list[Hit]]


def run_checks(kind: str, ctx: Context) -> list[Hit]:
    """What the checks of one node kind found, each hit naming its check."""
    hits: list[Hit] = []
    for check in REGISTRY[kind]:
        try:
            found = check(ctx)
        except (RecursionError, MemoryError):
            raise  # the cell is too big to check, not a bug in one check: a person reviews the cell
        except Exception:
            log.exception("scan check %s failed on line %s of cell %s; the other checks go on",
                          check.__name__, getattr(ctx.node, "lineno", "?"), ctx.place.cell)
            continue
        hits += [hit if hit.check else replace(hit, check=check.__name__) for hit in found]
    return hits


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


def builtins_namespace(ctx: Context[ast.Name]) -> list[Hit]:
    if ctx.node.id == "__builtins__":
        return [ctx.hit("dynamic-code", detail="reaches the builtins directly")]
    return []


def grader_name(ctx: Context[ast.Name]) -> list[Hit]:
    """``__coursekit_guard``: the grader's own objects in the kernel."""
    if "coursekit" in ctx.node.id.lower():
        return [ctx.hit("introspection", detail="reaches the grader's instrumentation")]
    return []


def free_builtin(ctx: Context[ast.Name]) -> list[Hit]:
    """Builtins that run code, stop the process or look attributes up by name."""
    name = ctx.node.id
    if name == "__builtins__" or not ctx.resolver.unbound(name):
        return []
    if name in DYNAMIC_BUILTINS:
        return [ctx.hit("dynamic-code", ctx.shown, "runs code built at run time")]
    if name in EXIT_BUILTINS:
        return [ctx.hit("process", ctx.shown, "stops the Python process")]
    if name in ATTR_BUILTINS:
        return [ctx.hit("dynamic-code", detail="passes an attribute-lookup builtin around")]
    if name == "set_grad_enabled":
        return [ctx.hit("autograd", ctx.shown, " (`set_grad_enabled`)")]
    return []


def name_path(ctx: Context[ast.Name]) -> list[Hit]:
    if ctx.node.id == "__builtins__" or ctx.in_resolved_chain:
        return []
    found, path, _ = ctx.resolver.lookup(ctx.node.id)
    return ctx.path_hits(path, ctx.shown) if found else []


# ---- attributes ----------------------------------------------------------------


def attribute_path(ctx: Context[ast.Attribute]) -> list[Hit]:
    if ctx.path and not ctx.in_resolved_chain:
        return ctx.path_hits(ctx.path, ctx.shown)
    return []


def attribute_name(ctx: Context[ast.Attribute]) -> list[Hit]:
    """``x.backward``, ``x.softmax``, ``learn.fit``: whatever ``x`` is."""
    node = ctx.node
    return run_checks("attribute-name", ctx.attribute_named(ctx.shown, node.value, node.attr,
                                                            store=not isinstance(node.ctx, ast.Load), call=ctx.call))


def module_namespace(ctx: Context[ast.Attribute]) -> list[Hit]:
    if ctx.node.attr == "__dict__" and ctx.resolver.resolve(ctx.node.value):
        return [ctx.hit("dynamic-code", detail="looks inside a module's namespace")]
    return []


# ---- attribute names, on any receiver (also `getattr(x, "name")`) ---------------


def autograd_attribute(ctx: Context) -> list[Hit]:
    if ctx.attr in AUTOGRAD_ATTRS and not switches_off(ctx) and is_autograd_use(ctx):
        return [ctx.hit("autograd", detail=f" (`.{ctx.attr}`)")]
    return []


def switches_off(ctx: Context) -> bool:
    """Reading ``x.requires_grad``, or ``x.requires_grad_(False)``: saying "no gradient" is not autograd."""
    if ctx.attr == "requires_grad":
        return not ctx.store
    call = ctx.call
    return (ctx.attr == "requires_grad_" and call is not None and bool(call.args)
            and isinstance(call.args[0], ast.Constant) and not call.args[0].value)


def introspection_attribute(ctx: Context) -> list[Hit]:
    """``f.__closure__``, ``type(t).__mro__``, ``frame.f_back``: except a student's own ``self.__dict__``."""
    if ctx.attr in INTROSPECTION_ATTRS and not (ctx.attr == "__dict__" and ctx.resolver.is_self(ctx.receiver)):
        return [ctx.hit("introspection", detail="looks inside a function, a type or the running frames")]
    if "coursekit" in ctx.attr.lower():
        return [ctx.hit("introspection", detail="reaches the grader's instrumentation")]
    return []


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


def ready_made_method(ctx: Context) -> list[Hit]:
    if not ctx.store and norm(ctx.attr) in READY_MADE and not _student_object(ctx):
        return [ctx.hit("ready-made-function", detail=norm(ctx.attr))]
    return []


def fastai_fit(ctx: Context) -> list[Hit]:
    if ctx.store or ctx.attr not in FASTAI_FIT_METHODS:
        return []
    if (ctx.resolver.kind(ctx.receiver) == "learner"
            or not (_student_object(ctx) or ctx.attr in ctx.facts.methods)):
        return [ctx.hit("fastai-training", detail=f".{ctx.attr}()")]
    return []


def fastai_distinctive(ctx: Context) -> list[Hit]:
    if not ctx.store and ctx.attr in FASTAI_DISTINCTIVE and not ctx.resolver.is_self(ctx.receiver):
        return [ctx.hit("fastai-training", detail=ctx.attr)]
    return []


# ---- subscripts ------------------------------------------------------------------


def namespace_subscript(ctx: Context[ast.Subscript]) -> list[Hit]:
    """``globals()["x"] = 1``, ``globals()[name]``; ``globals()["nn"]`` is just ``nn``."""
    node = ctx.node
    if ctx.resolver.namespace_call(node.value) and (
            not isinstance(node.ctx, ast.Load) or str_const(node.slice) is None):
        return [ctx.hit("dynamic-code", detail="reads or changes variables through a namespace dictionary")]
    return []


def subscript_path(ctx: Context[ast.Subscript]) -> list[Hit]:
    if not ctx.in_resolved_chain and str_const(ctx.node.slice) is not None:
        return ctx.path_hits(ctx.path)
    return []


# ---- calls -------------------------------------------------------------------------


def requires_grad_keyword(ctx: Context[ast.Call]) -> list[Hit]:
    """``requires_grad=True`` is autograd, ``requires_grad=False`` is not; a value or ``**`` keywords
    the checker cannot read, passed to torch, go to a person."""
    hits: list[Hit] = []
    for kw in ctx.node.keywords:
        if kw.arg == "requires_grad":
            hits += _requires_grad_value(ctx, kw, kw.value)
        elif kw.arg is None:
            keys = _literal_keywords(kw.value)
            if keys is not None and "requires_grad" in keys:
                hits += _requires_grad_value(ctx, kw, keys["requires_grad"])
            elif keys is None and (ctx.func_path or "").startswith("torch."):
                hits.append(ctx.hit("dynamic-code", kw, "passes keywords the checker cannot read (`**`) to torch"))
    return hits


def _requires_grad_value(ctx: Context, node: ast.keyword, value: ast.expr) -> list[Hit]:
    if not isinstance(value, ast.Constant):
        return [ctx.hit("dynamic-code", node, "sets `requires_grad` to a value computed at run time")]
    if value.value:
        return [ctx.hit("autograd", node, " (`requires_grad=`)")]
    return []


def _literal_keywords(node) -> Optional[dict]:
    """The keywords of ``**{"a": 1}`` or ``**dict(a=1)``, or None when they cannot be read."""
    if isinstance(node, ast.Dict) and all(str_const(k) is not None for k in node.keys):
        return {str_const(k): v for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args and all(kw.arg for kw in node.keywords)):
        return {kw.arg: kw.value for kw in node.keywords}
    return None


def import_call_path(ctx: Context[ast.Call]) -> list[Hit]:
    """``__import__("torch.nn")``, ``importlib.import_module(...)``."""
    return [] if ctx.in_resolved_chain else ctx.path_hits(ctx.path)


def _grad_switch(ctx: Context[ast.Call]) -> Optional[bool]:
    """For a ``set_grad_enabled(...)`` call: is it an allowed switch-off?  None for any other call."""
    fpath = ctx.func_path
    if fpath not in ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled") and (
            ctx.free_func != "set_grad_enabled"):
        return None
    node = ctx.node
    args = list(node.args) + [k.value for k in node.keywords if k.arg == "mode"]
    off = bool(args) and isinstance(args[0], ast.Constant) and args[0].value is False
    return off and fpath != "torch.autograd.set_grad_enabled"


def set_grad_enabled(ctx: Context[ast.Call]) -> list[Hit]:
    """``set_grad_enabled(False)`` is allowed, anything else is autograd."""
    if _grad_switch(ctx) is False:
        return [ctx.hit("autograd", detail=" (`set_grad_enabled`)")]
    return []


def judges_its_function(ctx: Context[ast.Call]) -> bool:
    """Do this call's checks say all there is about its function (``getattr``, ``set_grad_enabled(False)``)?
    The walker then does not check the function on its own."""
    return ctx.free_func in ATTR_BUILTINS or bool(_grad_switch(ctx))


def _attribute_by_name(ctx: Context, receiver: ast.AST, name: Optional[str], store: bool) -> list[Hit]:
    """``getattr(receiver, "name")`` is ``receiver.name``; a computed name cannot be checked."""
    if name is None:
        return [ctx.hit("dynamic-code", detail="uses an attribute name computed at run time")]
    base = ctx.resolver.resolve(receiver)
    hits = ctx.path_hits(f"{base}.{name}") if base else []
    return hits + run_checks("attribute-name", ctx.attribute_named(ctx.node, receiver, name, store))


def attribute_builtins(ctx: Context[ast.Call]) -> list[Hit]:
    name, args = ctx.free_func, ctx.node.args
    if name not in ATTR_BUILTINS or len(args) < 2:
        return []
    return _attribute_by_name(ctx, args[0], str_const(args[1]), store=name in ("setattr", "delattr"))


def dunder_attribute_methods(ctx: Context[ast.Call]) -> list[Hit]:
    """``x.__getattribute__("grad")`` and friends."""
    f, args = ctx.node.func, ctx.node.args
    if not (isinstance(f, ast.Attribute) and f.attr in DUNDER_ATTR_METHODS):
        return []
    return _attribute_by_name(ctx, f.value, str_const(args[0]) if args else None,
                              store=f.attr in ("__setattr__", "__delattr__"))


def operator_getters(ctx: Context[ast.Call]) -> list[Hit]:
    """``operator.attrgetter("grad")``, ``operator.methodcaller("backward")``."""
    if ctx.func_path not in ("operator.attrgetter", "operator.methodcaller") or not ctx.node.args:
        return []
    lit = str_const(ctx.node.args[0])
    if lit is None:
        return [ctx.hit("dynamic-code", detail="uses an attribute name computed at run time")]
    hits = []
    for part in lit.split("."):
        if part in AUTOGRAD_ATTRS:
            hits.append(ctx.hit("autograd", detail=f" (`.{part}`)"))
        if norm(part) in READY_MADE:
            hits.append(ctx.hit("ready-made-function", detail=norm(part)))
    return hits


def namespace_mutation(ctx: Context[ast.Call]) -> list[Hit]:
    """``globals().update(...)`` and other changes through a namespace dictionary."""
    f = ctx.node.func
    if (isinstance(f, ast.Attribute) and f.attr in NAMESPACE_MUTATORS
            and ctx.resolver.namespace_call(f.value)):
        return [ctx.hit("dynamic-code", detail="changes variables through a namespace dictionary")]
    return []


def file_paths(ctx: Context[ast.Call]) -> list[Hit]:
    """Files outside the assignment folder, given as literal paths."""
    fpath = ctx.func_path
    if ctx.free_func == "open" or (fpath and fpath.split(".")[0] in FILE_LIBRARIES):
        args = list(ctx.node.args) + [k.value for k in ctx.node.keywords]
        if any(literal_outside(a) for a in args):
            return [ctx.hit("file-access", detail="uses a file path outside the assignment folder")]
    return []


# ---- other statements and expressions -------------------------------------------------


def path_division(ctx: Context[ast.BinOp]) -> list[Hit]:
    """``Path("data") / ".."``."""
    if isinstance(ctx.node.op, ast.Div) and literal_outside(ctx.node.right):
        return [ctx.hit("file-access", detail="builds a file path outside the assignment folder")]
    return []


def monkeypatch(ctx: Context) -> list[Hit]:
    """``torch.allclose = ...``: an assignment to a library's attribute."""
    target = ctx.node
    if isinstance(target, ast.Attribute) and ctx.resolver.resolve(target.value):
        # ctx.path is the target's dotted name, found whenever its value's is; `or ""` would change the message if not
        return [ctx.hit("monkeypatch", detail=ctx.path,  # type: ignore[arg-type]
                        spelled=f"{ctx.place.spell(target)} = ...")]
    return []


def namespace_kept(ctx: Context) -> list[Hit]:
    """``g = globals()``: the dictionary can later change any variable."""
    if ctx.resolver.namespace_call(ctx.node, no_args=True):
        return [ctx.hit("dynamic-code", detail="keeps a namespace dictionary to change variables")]
    return []


def imported_path(ctx: Context) -> list[Hit]:
    return ctx.path_hits(ctx.imported, spelled=ctx.spelled)


#: node kind -> its checks; "ipython-call" is a get_ipython() call that :mod:`.magics` expanded
REGISTRY: dict[str, tuple[Check, ...]] = {
    "name": (builtins_namespace, grader_name, free_builtin, name_path),
    "attribute": (attribute_path, attribute_name, module_namespace),
    "attribute-name": (autograd_attribute, introspection_attribute, ready_made_method, fastai_fit, fastai_distinctive),
    "subscript": (namespace_subscript, subscript_path),
    "call": (requires_grad_keyword, import_call_path, set_grad_enabled, attribute_builtins,
             dunder_attribute_methods, operator_getters, namespace_mutation, file_paths),
    "ipython-call": (requires_grad_keyword,),
    "binop": (path_division,),
    "assign-target": (monkeypatch,),
    "binding": (namespace_kept,),
    "import": (imported_path,),
}
