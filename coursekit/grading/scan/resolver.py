"""Name resolution: scopes, bindings, aliases, imports and star imports.

The resolver turns an expression into the fully qualified dotted name of what
it denotes (``t.nn.Linear`` after ``import torch as t`` is
``torch.nn.Linear``), or None for the student's own values, and guesses a
rough kind (tensor, instance of a student class, ...).  Unlike a flat alias
map it follows Python's scoping: a parameter, local or comprehension variable
named ``nn`` shadows ``torch.nn``; class bodies are skipped by nested scopes;
``global``/``nonlocal`` bind in the module scope.
"""

from __future__ import annotations

import ast
from contextlib import contextmanager
from typing import Iterable, Optional

from .apis import (
    FASTAI_AUTOGRAD,
    FASTAI_LAYERS,
    FASTAI_LEARNERS,
    FASTAI_NETWORK,
    FASTAI_TRAINING,
    IPYTHON,
    NAMESPACE_BUILTINS,
    READY_MADE,
    TENSOR_METHODS,
    TORCHVISION_MODELS,
)
from .facts import Facts

Path = Optional[str]

# Names that ``from fastai.vision.all import *`` (the course preamble) brings
# into scope.  They are assumed in scope even if the caller passes no
# preamble, because the notebook always starts with that import.
STAR_MODULES: dict[str, str] = {
    "torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional",
    "np": "numpy", "plt": "matplotlib.pyplot", "pd": "pandas", "os": "os",
    "sys": "sys", "shutil": "shutil", "glob": "glob", "requests": "requests",
    "urllib": "urllib", "multiprocessing": "multiprocessing",
    "queues": "multiprocessing.queues", "pickle": "pickle",
    "tempfile": "tempfile", "threading": "threading", "scipy": "scipy",
    "ndimage": "scipy.ndimage", "Image": "PIL.Image", "random": "random",
    "math": "math", "json": "json", "io": "io", "inspect": "inspect",
    "re": "re", "time": "time", "types": "types", "warnings": "warnings",
    "zipfile": "zipfile", "tarfile": "tarfile", "hashlib": "hashlib",
    "functools": "functools", "itertools": "itertools",
    "operator": "operator", "collections": "collections",
    "typing": "typing", "concurrent": "concurrent",
    "models": "fastai.vision.models", "matplotlib": "matplotlib",
}
STAR_OBJECTS: dict[str, str] = {
    "Path": "pathlib.Path",
    **{n: "fastai.learner." + n for n in FASTAI_TRAINING},
    **{n: "fastai.layers." + n for n in FASTAI_LAYERS},
    **{n: "fastai.torch_core." + n for n in FASTAI_AUTOGRAD},
    **{n: "fastai.data.external." + n for n in FASTAI_NETWORK},
    **{n: "torchvision.models." + n for n in TORCHVISION_MODELS},
}
#: star-importable torch modules that export the ready-made functions
TORCH_STAR_SOURCES = ("torch", "torch.special", "torch.nn.functional", "torch.nn")


def str_const(node) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def target_names(target) -> list:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def arg_names(a: ast.arguments) -> list:
    names = [x.arg for x in list(a.posonlyargs) + list(a.args) + list(a.kwonlyargs)]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return names


def local_names(fn) -> set:
    """Names bound inside a function body (not in nested scopes)."""
    out: set = set()
    stack = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                             ast.GeneratorExp, ast.Global)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return out


def global_decls(fn) -> set:
    """Names a function declares ``global`` or ``nonlocal``."""
    out: set = set()
    stack = list(fn.body) if isinstance(fn.body, list) else []
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
        stack.extend(ast.iter_child_nodes(node))
    return out


class Scope:
    __slots__ = ("kind", "paths", "kinds", "globals_")

    def __init__(self, kind: str, names: Iterable[str] = (), globals_: Iterable[str] = ()):
        self.kind = kind  # "module" | "function" | "class" | "comp"
        self.globals_: set = set(globals_)
        self.paths: dict[str, Path] = {n: None for n in names if n not in self.globals_}
        self.kinds: dict[str, str] = {}


class Resolver:
    """The scope stack of one notebook walk, and what names resolve to."""

    def __init__(self, facts: Facts):
        self.facts = facts
        module = Scope("module")
        module.paths.update(STAR_MODULES)
        for name, path in STAR_OBJECTS.items():
            if name in facts.toplevel_defs:
                continue  # the student's own def/class wins wherever it is
            module.paths[name] = path
            if name in FASTAI_LEARNERS:
                module.kinds[name] = "learner-factory"
        for name in facts.toplevel_defs:
            module.paths[name] = None
            module.kinds[name] = "class" if name in facts.classes else "function"
        self.scopes: list[Scope] = [module]

    # ---- scopes ----------------------------------------------------------

    def lookup(self, name: str) -> tuple:
        """(found, path, kind) of a name as seen from the innermost scope."""
        top = self.scopes[-1]
        for sc in reversed(self.scopes):
            if sc.kind == "class" and sc is not top:
                continue
            if name in sc.paths:
                return True, sc.paths[name], sc.kinds.get(name)
        return False, None, None

    def unbound(self, name: str) -> bool:
        return not self.lookup(name)[0]

    def bind(self, name: str, path: Path = None, kind: Optional[str] = None) -> None:
        sc = self.scopes[-1]
        if name in sc.globals_:
            sc = self.scopes[0]
        sc.paths[name] = path
        if kind:
            sc.kinds[name] = kind
        else:
            sc.kinds.pop(name, None)

    @contextmanager
    def scope(self, kind: str, names: Iterable[str] = (), globals_: Iterable[str] = ()):
        self.scopes.append(Scope(kind, names, globals_))
        try:
            yield
        finally:
            self.scopes.pop()

    def reset(self) -> None:
        """Back to the module scope (after a walk was interrupted)."""
        del self.scopes[1:]

    # ---- imports ---------------------------------------------------------

    def bind_import(self, alias: ast.alias) -> None:
        if alias.asname:
            self.bind(alias.asname, alias.name)
        else:
            root = alias.name.split(".")[0]
            self.bind(root, root)

    def bind_star(self, module: str) -> None:
        """``from module import *``: what the course cares about in it."""
        if under(module, "fastai"):  # (re)binds nn, F, torch, Learner, ...
            for name, path in STAR_MODULES.items():
                self.bind(name, path)
            for name, path in STAR_OBJECTS.items():
                if name not in self.facts.toplevel_defs:
                    self.bind(name, path, "learner-factory" if name in FASTAI_LEARNERS else None)
        if module in TORCH_STAR_SOURCES:
            for name in READY_MADE:
                if name not in self.facts.toplevel_defs:
                    self.bind(name, f"{module}.{name}")

    # ---- resolution ------------------------------------------------------

    def resolve(self, node) -> Path:
        """Fully qualified dotted name of an expression, if it is a module
        member we know; None for the student's own values."""
        if isinstance(node, ast.Name):
            return self.lookup(node.id)[1]
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        if isinstance(node, ast.Subscript):
            return self._resolve_subscript(node)
        return None

    def _resolve_call(self, node: ast.Call) -> Path:
        """``__import__("m")``, ``getattr(m, "x")``, ``get_ipython()``, ..."""
        f = node.func
        if isinstance(f, ast.Name) and self.unbound(f.id):
            if f.id == "get_ipython" and not node.args:
                return IPYTHON
            if f.id == "getattr" and len(node.args) >= 2:
                lit = str_const(node.args[1])
                base = self.resolve(node.args[0])
                return f"{base}.{lit}" if base and lit else None
            if f.id == "__import__" and node.args:
                lit = str_const(node.args[0])
                if lit:
                    fromlist = len(node.args) >= 4 or any(
                        k.arg == "fromlist" for k in node.keywords)
                    return lit if fromlist else lit.split(".")[0]
        fpath = self.resolve(f)
        if fpath == "importlib.import_module" and node.args:
            return str_const(node.args[0])
        if fpath in ("IPython.get_ipython", "IPython.core.getipython.get_ipython"):
            return IPYTHON
        return None

    def _resolve_subscript(self, node: ast.Subscript) -> Path:
        """``globals()["nn"]``, ``sys.modules["torch.nn"]``."""
        key = str_const(node.slice)
        if key is None:
            return None
        v = node.value
        if (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                and v.func.id in ("globals", "locals") and self.unbound(v.func.id)):
            return self.lookup(key)[1]
        if self.resolve(v) == "sys.modules":
            return key
        return None

    def namespace_call(self, node, no_args: bool = False) -> bool:
        """Is ``node`` a call of the builtin globals/locals/vars?"""
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in NAMESPACE_BUILTINS and not (no_args and node.args)
                and self.unbound(node.func.id))

    # ---- rough types -------------------------------------------------------

    @staticmethod
    def is_self(node) -> bool:
        if isinstance(node, ast.Name) and node.id in ("self", "cls"):
            return True
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "super")

    def kind(self, node) -> Optional[str]:
        """Rough type of an expression: "tensor", "instance" (of a student
        class), "class", "learner" or None (unknown)."""
        if isinstance(node, ast.Name):
            if node.id in ("self", "cls"):
                return "instance"
            return self.lookup(node.id)[2]
        if isinstance(node, ast.Call):
            return self._call_kind(node)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.MatMult):
                return "tensor"
            return "tensor" if "tensor" in (self.kind(node.left), self.kind(node.right)) else None
        if isinstance(node, ast.UnaryOp):
            return "tensor" if self.kind(node.operand) == "tensor" else None
        if isinstance(node, ast.Subscript):
            return "tensor" if self.kind(node.value) == "tensor" else None
        if isinstance(node, ast.Attribute):
            p = self.resolve(node)
            if p and p.split(".")[0] == "torch" and p.split(".")[-1] == "Tensor":
                return "tensor"
        return None

    def _call_kind(self, node: ast.Call) -> Optional[str]:
        f = node.func
        if isinstance(f, ast.Name) and f.id == "super":
            return "instance"
        called = {"class": "instance", "learner-factory": "learner",
                  "instance": "tensor"}  # calling a model/loss object: its forward output
        fk = self.kind(f) if isinstance(f, ast.Name) else None
        if fk in called:
            return called[fk]
        fpath = self.resolve(f)
        if fpath and fpath.split(".")[0] == "torch":
            return "tensor"
        if fpath and fpath.split(".")[-1] in FASTAI_LEARNERS:
            return "learner"
        if isinstance(f, ast.Attribute):
            if f.attr in TENSOR_METHODS or self.kind(f.value) == "tensor":
                return "tensor"
        return None


class ScopedVisitor(ast.NodeVisitor):
    """Walks statements in execution order and keeps ``self.resolver``'s
    scopes in step: loops, ``with``, ``except``, ``del``, ``global``,
    functions, lambdas, classes and comprehensions.  Annotations are not
    visited: ``x: nn.Module`` uses nothing."""

    resolver: Resolver

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.resolver.bind(node.target.id)
        else:
            self.visit(node.target)

    def visit_For(self, node) -> None:
        self.visit(node.iter)
        for n in target_names(node.target):
            self.resolver.bind(n)
        self.visit(node.target)
        for st in node.body + node.orelse:
            self.visit(st)

    visit_AsyncFor = visit_For

    def visit_With(self, node) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                for n in target_names(item.optional_vars):
                    self.resolver.bind(n)
                self.visit(item.optional_vars)
        for st in node.body:
            self.visit(st)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.resolver.bind(node.name)
        for st in node.body:
            self.visit(st)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.resolver.bind(t.id)
            else:
                self.visit(t)

    def visit_Global(self, node) -> None:
        self.resolver.scopes[-1].globals_.update(node.names)

    visit_Nonlocal = visit_Global

    def visit_FunctionDef(self, node) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)  # defaults only
        self.resolver.bind(node.name, None, "function")
        names = set(arg_names(node.args)) | local_names(node)
        with self.resolver.scope("function", names, global_decls(node)):
            for st in node.body:
                self.visit(st)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node: ast.arguments) -> None:
        for d in list(node.defaults) + [d for d in node.kw_defaults if d is not None]:
            self.visit(d)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        with self.resolver.scope("function", arg_names(node.args)):
            self.visit(node.body)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in node.decorator_list + node.bases + node.keywords:
            self.visit(child)
        self.resolver.bind(node.name, None, "class")
        with self.resolver.scope("class"):
            for st in node.body:
                self.visit(st)

    def _comprehension(self, node, elts: list) -> None:
        gens = node.generators
        if not gens:
            return
        self.visit(gens[0].iter)  # evaluated in the enclosing scope
        names = set()
        for g in gens:
            names.update(target_names(g.target))
        with self.resolver.scope("comp", names):
            for i, g in enumerate(gens):
                if i:
                    self.visit(g.iter)
                self.visit(g.target)
                for cond in g.ifs:
                    self.visit(cond)
            for e in elts:
                self.visit(e)

    def visit_ListComp(self, node) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node) -> None:
        self._comprehension(node, [node.key, node.value])
