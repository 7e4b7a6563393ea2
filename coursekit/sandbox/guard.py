"""The run-time guard, executed in the student's kernel before the first cell: it records every call
into a forbidden API whose direct caller is notebook code, and after each cell reports what it saw
(with the run's other in-kernel checks: grad mode, tensors that require grad).

It sees what the static scan cannot (`getattr(torch, name)`, `exec`, `importlib`, Tensor methods),
because it is a `torch.overrides.TorchFunctionMode`: every torch function, Tensor method and
property access that honours `__torch_function__` passes through it. The caller is the first frame
outside torch itself: a cell (the runner maps it to its index), code with no file of its own (`exec`,
`eval`: "dynamic", charged to the cell running), or a library (fastai's data loading: not the
student's). Like probe.py, this module is executed as source in the kernel and imports nothing
from `coursekit`; the grader decides what a record costs.
"""
import os
import sys

import torch
from torch.overrides import TorchFunctionMode

# What may not be called, as data: a dotted name (or `module.*` for all its public functions) -> rule.
FORBIDDEN = {
    "torch.nn.functional.*": "torch-nn",
    "torch.nn.init.*": "torch-nn",
    "torch._C._nn.*": "torch-nn",
    "torch.softmax": "ready-made",
    "torch.log_softmax": "ready-made",
    "torch.logsumexp": "ready-made",
    "torch.special.softmax": "ready-made",
    "torch.special.log_softmax": "ready-made",
    "torch.special.logsumexp": "ready-made",
    "torch.Tensor.softmax": "ready-made",
    "torch.Tensor.log_softmax": "ready-made",
    "torch.Tensor.logsumexp": "ready-made",
    "torch.Tensor.backward": "autograd",
    "torch.Tensor.requires_grad_": "autograd",
    "torch.Tensor.retain_grad": "autograd",
    "torch.Tensor.grad.__get__": "autograd",
    "torch.Tensor.grad.__set__": "autograd",
    "torch.Tensor.grad_fn.__get__": "autograd",
    "torch.Tensor.requires_grad.__set__": "autograd",
    "torch.autograd.backward": "autograd",
    "torch.autograd.grad": "autograd",
    "torch._C._set_grad_enabled": "autograd",
}
TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
OPTIM_DIR = os.path.join(TORCH_DIR, "optim") + os.sep
LIBRARY_DIRS = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
OWN_FILES = {"coursekit_guard", "coursekit_probe"}
MAX_RECORDS = 100


def resolve(table):
    """{callable: (dotted name, rule)} for every name of the table that exists in this torch."""
    found = {}
    for name, rule in table.items():
        module_name, _, attribute = name.rpartition(".")
        if attribute == "*":
            module = resolve_name(module_name)
            for key in dir(module):
                function = getattr(module, key)
                if not key.startswith("_") and callable(function) and not isinstance(function, type):
                    found[function] = (f"{module_name}.{key}", rule)
            continue
        function = resolve_name(name)
        if function is not None:
            found[function] = (name, rule)
    return found


def resolve_name(name):
    parts = name.split(".")
    obj = sys.modules.get(parts[0]) or __import__(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class Guard(TorchFunctionMode):
    def __init__(self, no_autograd):
        super().__init__()
        self.no_autograd = no_autograd
        self.forbidden = resolve(FORBIDDEN)
        self.records, self.seen = [], set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        try:
            entry = self.forbidden.get(func)
        except TypeError:  # an unhashable callable is never in the table
            entry = None
        if entry is not None:
            self.check(entry, args)
        return func(*args, **(kwargs or {}))

    def check(self, entry, args):
        api, rule = entry
        if api == "torch._C._set_grad_enabled" and not (args and args[0]):
            return  # switching grad mode off is allowed
        frame, through_optim = first_caller(sys._getframe(2))
        if through_optim:
            api, rule = "torch.optim", "torch-optim"
        elif rule == "autograd" and not self.no_autograd:
            return
        where = locate(frame)
        if where is not None and len(self.records) < MAX_RECORDS:
            key = (*where, api)
            if key not in self.seen:
                self.seen.add(key)
                self.records.append({"execution": where[0], "dynamic": where[0] is None, "line": where[1],
                                     "running": running_cell(), "api": api, "rule": rule})


def first_caller(frame):
    """The first frame outside torch, and whether torch.optim was on the way to it."""
    through_optim = False
    while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
        through_optim = through_optim or frame.f_code.co_filename.startswith(OPTIM_DIR)
        frame = frame.f_back
    return frame, through_optim


def locate(frame):
    """(execution count of the cell, line) for notebook code; (None, line) for dynamic code;
    None for library code and the grader's own."""
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    cells = getattr(get_ipython().compile, "_filename_map", {})  # noqa: F821  (IPython builtin)
    if filename in cells:
        return cells[filename], frame.f_lineno
    if filename in OWN_FILES or filename.startswith("<frozen") or os.path.realpath(filename).startswith(LIBRARY_DIRS):
        return None
    return None, frame.f_lineno


def running_cell():
    """The execution count of the cell now running (IPython counts it up before the cell runs)."""
    return get_ipython().execution_count - 1  # noqa: F821


def autograd_in_use(namespace):
    """Grad mode, and tensors of the namespace that require grad or carry a graph."""
    found, seen = [], set()
    if torch.is_grad_enabled():
        found.append("grad mode is on (torch.is_grad_enabled() is True)")

    def visit(name, obj, depth):
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.requires_grad or obj.grad_fn is not None:
                found.append(f"{name} requires grad or has a grad_fn")
        elif isinstance(obj, dict):
            for key, value in list(obj.items())[:200]:
                visit(f"{name}[{key!r}]", value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for position, value in enumerate(obj[:200]):
                visit(f"{name}[{position}]", value, depth + 1)
        elif not isinstance(obj, type) and type(obj).__module__ == "__main__":
            for key, value in list(vars(obj).items())[:200]:
                visit(f"{name}.{key}", value, depth + 1)

    for name, obj in list(namespace.items()):
        if not name.startswith("_"):
            visit(name, obj, 0)
    return found[:20]


GUARD = None


def install(no_autograd):
    """Push the guard for the rest of the kernel's life; with the no-autograd policy, grad mode off."""
    global GUARD
    GUARD = Guard(no_autograd)
    GUARD.__enter__()
    if no_autograd:
        torch.set_grad_enabled(False)


def after_cell():
    """What the runner collects after each cell: the guard's new records and, under the no-autograd
    policy, autograd in use. Also says whether the guard is still in place."""
    records, GUARD.records = GUARD.records, []
    stack = torch.overrides._get_current_function_mode_stack()
    return {"calls": records, "guard_active": any(mode is GUARD for mode in stack),
            "autograd": autograd_in_use(get_ipython().user_ns) if GUARD.no_autograd else []}  # noqa: F821
