"""The in-kernel instrumentation layer, executed in the student's kernel before the first cell. It
records what the student's code does, and after each cell reports it to the runner as data:
- the run-time guard: calls into a forbidden API that the student's code made (and, under the
  no-autograd policy, grad mode and tensors that require grad);
- imported data: tensors or arrays deserialised by notebook code (`torch.load`, pickle, numpy...);
- and, through the training record (training_record.py, installed before the guard), the training
  evidence for the grader's own retraining.

The guard replaces every forbidden API (module functions, Tensor methods and properties) by a wrapper, so
allowed operations cost nothing. A wrapped call is charged to the student only on evidence that the student's
code made it: walking out from the wrapper's caller, torch's own frames are passed (and the call is torch's
own business, e.g. `print(tensor)` reading `grad_fn`, unless torch was entered through a forbidden package
such as torch.nn or torch.optim), then standard-library frames (`functools`, `threading`...) and the guard's
thread hooks, and the frame reached must be notebook code: a cell, or code made at run time (`exec`, `eval`:
"dynamic"). Library frames (fastai, matplotlib, IPython) and the grader's own are not the student's. A thread
started by notebook code is charged to the line that started it.

Like probes.py, this module is executed as source in the kernel and imports nothing from `coursekit`;
the grader decides what each record costs.
"""
import functools
import inspect
import os
import sys
import sysconfig
import threading

import torch

# What may not be called, as data: a dotted name (`module.*`: all its public torch functions;
# `torch.Tensor.name.__get__` / `__set__`: reading or setting a Tensor property) -> rule.
FORBIDDEN = {
    "torch.nn.functional.*": "torch-nn",
    "torch.nn.init.*": "torch-nn",
    "torch._C._nn.*": "torch-nn",
    "torch.softmax": "ready-made",
    "torch.log_softmax": "ready-made",
    "torch.logsumexp": "ready-made",
    "torch._softmax": "ready-made",
    "torch._log_softmax": "ready-made",
    "torch.special.softmax": "ready-made",
    "torch.special.log_softmax": "ready-made",
    "torch.special.logsumexp": "ready-made",
    "torch.sparse.softmax": "ready-made",
    "torch.sparse.log_softmax": "ready-made",
    "torch.Tensor.softmax": "ready-made",
    "torch.Tensor.log_softmax": "ready-made",
    "torch.Tensor.logsumexp": "ready-made",
    "torch.kl_div": "ready-made",
    "torch.binary_cross_entropy_with_logits": "ready-made",
    "torch.Tensor.backward": "autograd",
    "torch.Tensor.requires_grad_": "autograd",
    "torch.Tensor.retain_grad": "autograd",
    "torch.Tensor.grad.__get__": "autograd",
    "torch.Tensor.grad.__set__": "autograd",
    "torch.Tensor.grad_fn.__get__": "autograd",
    "torch.Tensor.requires_grad.__set__": "autograd",
    "torch.autograd.backward": "autograd",
    "torch.autograd.grad": "autograd",
    "torch.func.*": "autograd",
    "torch._C._set_grad_enabled": "autograd",
}
# Where the torch code that made a wrapped call was entered from notebook code: these packages are
# forbidden whole, so what they call is charged to the student; any other part of torch (printing,
# copying, saving, torch.testing...) uses the wrapped APIs on its own behalf.
FORBIDDEN_PACKAGES = {"torch.nn": "torch-nn", "torch.optim": "torch-optim", "torch.autograd": "autograd",
                      "torch.func": "autograd", "torch._functorch": "autograd", "torch.distributions": "ready-made"}
# Switching autograd off is allowed: (the argument that says on or off, its default).
SWITCHES = {"torch._C._set_grad_enabled": (0, True), "torch.Tensor.requires_grad_": (1, True),
            "torch.Tensor.requires_grad": (1, True)}
TORCH_DIR = os.path.realpath(os.path.dirname(torch.__file__)) + os.sep
STDLIB_DIRS = tuple({os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")})
OWN_FILES = {"coursekit_guard", "coursekit_record", "coursekit_probe"}
MAX_RECORDS = 100  # of each kind, per cell: the runner sets protocol.MAX_GUARD_RECORDS before install()
AUTOGRAD_BACKWARDS = ("torch.Tensor.backward", "torch.autograd.backward")
KINDS = {}  # type: dict[str, str]  # a code object's file name -> "torch", "stdlib", "library", "own" or "other"


def file_kind(filename):
    kind = KINDS.get(filename)
    if kind is None:
        real = os.path.realpath(filename) if os.path.isabs(filename) else filename
        if filename in OWN_FILES:
            kind = "own"
        elif real.startswith(TORCH_DIR):
            kind = "torch"
        elif filename.startswith("<frozen") or (real.startswith(STDLIB_DIRS) and "site-packages" not in real):
            kind = "stdlib"
        elif os.path.isfile(real):
            kind = "library"
        else:
            kind = "other"
        KINDS[filename] = kind
    return kind


# the kernel's IPython shell, kept at install: `get_ipython` is a builtin only while a cell runs
SHELL = []  # type: list


def cell_files():
    return getattr(SHELL[0].compile, "_filename_map", {})


def locate(frame):
    """(execution count of the cell, line) for notebook code; (None, line) for code made at run time;
    None for library code and the grader's own."""
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    cells = cell_files()
    if filename in cells:
        return cells[filename], frame.f_lineno
    return (None, frame.f_lineno) if file_kind(filename) == "other" else None


def running_cell():
    """The execution count of the cell now running (IPython counts it up before the cell runs)."""
    return SHELL[0].execution_count - 1


def torch_package(frame):
    """`torch.nn`, `torch.optim`...: the package of a torch frame's file."""
    relative = os.path.realpath(frame.f_code.co_filename)[len(TORCH_DIR):]
    parts = ["torch", *relative.split(os.sep)]
    return next((name for name in FORBIDDEN_PACKAGES if ".".join(parts).startswith(name + ".")), None)


def within(frame):
    """The notebook's functions and classes on the stack from frame outward (`Linear` for
    `Linear.backward`, `train` for a function defined inside train), innermost first."""
    names, cells = [], cell_files()
    while frame is not None and len(names) < 20:
        code = frame.f_code
        if code.co_filename in cells or file_kind(code.co_filename) == "other":
            name = code.co_qualname.split(".")[0]
            if not name.startswith("<") and name not in names:
                names.append(name)
        frame = frame.f_back
    return names


def charged(frame):
    """Who made a wrapped call whose caller is `frame`: (where, within, package), where `where` is the
    student's (execution, line) or None, `within` the student's functions on the way to it, and
    `package` the forbidden torch package it went through."""
    entry = None
    while frame is not None and file_kind(frame.f_code.co_filename) == "torch":
        entry, frame = frame, frame.f_back
    package = torch_package(entry) if entry is not None else None
    if entry is not None and package is None:
        return None, [], None
    while frame is not None and (file_kind(frame.f_code.co_filename) == "stdlib" or frame.f_code in PASSED_THROUGH):
        frame = frame.f_back
    if frame is None:
        return *THREAD_ORIGINS.get(threading.get_ident(), (None, [])), package
    return locate(frame), within(frame), package


class Guard:
    """Every forbidden API replaced by a wrapper that records who called it (see the module's doc)."""

    def __init__(self, no_autograd):
        self.no_autograd = no_autograd
        self.records, self.seen = [], set()
        self.depth = threading.local()  # forbidden calls in progress: what they call is not the student's
        self.patched = []  # (owner, attribute, original, replacement)
        self.wrappers = []
        self.expected = ()  # what `active` compares: set at install

    def install(self):
        accessors = {}
        for owner, attribute, accessor, api, rule in targets(FORBIDDEN):
            if accessor is None:
                self.patch(owner, attribute, self.wrap(getattr(owner, attribute), api, rule))
            else:
                accessors.setdefault((owner, attribute), {})[accessor] = (api, rule)
        for (owner, attribute), guarded in accessors.items():
            descriptor = inspect.getattr_static(owner, attribute)
            getter, setter = descriptor.__get__, descriptor.__set__
            if "__get__" in guarded:
                getter = self.wrap(getter, *guarded["__get__"])
            if "__set__" in guarded:
                setter = self.wrap(setter, *guarded["__set__"])
            self.patch(owner, attribute, property(getter, setter))
        self.expected = self.fingerprint()

    def patch(self, owner, attribute, replacement):
        self.patched.append((owner, attribute, inspect.getattr_static(owner, attribute), replacement))
        setattr(owner, attribute, replacement)

    def fingerprint(self):
        """What must not change while the guard works: its class's methods, its own attributes, the
        module functions it relies on, and each wrapper's code and closure."""
        closures = tuple((w.__code__, tuple(cell.cell_contents for cell in w.__closure__ or ())) for w in self.wrappers)
        module = tuple(globals()[name] for name in ("charged", "within", "locate", "file_kind", "torch_package",
                                                    "switched_off"))
        return (type(self), tuple(vars(Guard).values()), tuple(sorted(vars(self))), module, closures)

    def active(self):
        """The wrappers are in place and nothing of the guard was changed."""
        return (all(inspect.getattr_static(owner, attribute, None) is replacement
                    for owner, attribute, _, replacement in self.patched) and self.fingerprint() == self.expected)

    def uninstall(self):
        for owner, attribute, original, _ in reversed(self.patched):
            setattr(owner, attribute, original)
        self.patched = []

    def wrap(self, function, api, rule):
        guard = self

        def guarded(*args, **kwargs):
            depth = getattr(guard.depth, "value", 0)
            if not depth:
                guard.check(api, rule, args, kwargs)
            guard.depth.value = depth + 1
            try:
                return function(*args, **kwargs)
            finally:
                guard.depth.value = depth
        guarded.__name__ = getattr(function, "__name__", api.rpartition(".")[2])
        guarded.__doc__ = getattr(function, "__doc__", None)
        self.wrappers.append(guarded)
        return guarded

    def check(self, api, rule, args, kwargs):
        if switched_off(api, args, kwargs):
            return
        if api in AUTOGRAD_BACKWARDS and not self.no_autograd:
            RECORD[0].autograd_backward()
        where, names, package = charged(sys._getframe(2))
        if package is not None:
            api, rule = package, FORBIDDEN_PACKAGES[package]
        if where is None or (rule == "autograd" and not self.no_autograd) or len(self.records) >= MAX_RECORDS:
            return
        key = (*where, api)
        if key not in self.seen:
            self.seen.add(key)
            self.records.append({"execution": where[0], "dynamic": where[0] is None, "line": where[1],
                                 "running": running_cell(), "api": api, "rule": rule, "within": names})


def switched_off(api, args, kwargs):
    """Is this call switching autograd off (allowed), e.g. `set_grad_enabled(False)`?"""
    if api not in SWITCHES:
        return False
    position, default = SWITCHES[api]
    value = args[position] if len(args) > position else kwargs.get("mode", kwargs.get("requires_grad", default))
    return value is False or (type(value) is int and value == 0)


def resolve_name(name):
    parts = name.split(".")
    obj = sys.modules.get(parts[0]) or __import__(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def targets(table):
    """(owner, attribute, accessor or None, dotted name, rule) for every entry that exists here."""
    for name, rule in table.items():
        path, _, last = name.rpartition(".")
        if last == "*":
            module = resolve_name(path)
            for key in dir(module) if module is not None else ():
                value = getattr(module, key)
                if (not key.startswith("_") and callable(value) and not isinstance(value, type)
                        and str(getattr(value, "__module__", "")).startswith("torch")):
                    yield module, key, None, f"{path}.{key}", rule
        elif last in ("__get__", "__set__"):
            owner_path, _, attribute = path.rpartition(".")
            yield resolve_name(owner_path), attribute, last, path, rule
        elif resolve_name(name) is not None:
            yield resolve_name(path), last, None, name, rule


# Threads: grad mode is per thread and a new thread starts with it on, and a thread's stack does not
# show who started it. Under the guard, every thread started after install begins with grad mode
# off (under the no-autograd policy), and remembers the notebook line that started it.
# thread ident -> ((execution, line), within) of the notebook code that started it
THREAD_ORIGINS = {}  # type: dict[int, tuple]
PASSED_THROUGH = set()  # type: set  # code objects of the guard's that a call's way out goes through (its thread hooks)
STARTED = {}  # type: dict[int, tuple]  # id(thread) -> the same, until the thread runs


def follow_threads(no_autograd):
    start, bootstrap = threading.Thread.start, threading.Thread._bootstrap_inner

    def started(thread, *args, **kwargs):
        try:
            remember_origin(thread, sys._getframe(1))
        except Exception:  # never break the student's thread; its calls are then charged to no one
            STARTED.pop(id(thread), None)
        return start(thread, *args, **kwargs)

    def bootstrapped(thread):
        THREAD_ORIGINS[threading.get_ident()] = STARTED.pop(id(thread), (None, []))
        if no_autograd:
            torch.set_grad_enabled(False)
        return bootstrap(thread)

    threading.Thread.start, threading.Thread._bootstrap_inner = started, bootstrapped
    PASSED_THROUGH.update((started.__code__, bootstrapped.__code__))


def remember_origin(thread, frame):
    while frame is not None and file_kind(frame.f_code.co_filename) == "stdlib":
        frame = frame.f_back
    STARTED[id(thread)] = (locate(frame), within(frame))


# Deserialisers, as data: a call from notebook code to any of them is recorded, for review.
LOADERS = ("torch.load", "torch.serialization.load", "numpy.load", "numpy.fromfile", "pickle.load", "pickle.loads",
           "safetensors.torch.load_file", "safetensors.torch.load", "safetensors.numpy.load_file",
           "base64.b64decode", "base64.b85decode", "base64.a85decode", "base64.decodebytes")
IMPORTS = []  # type: list[dict]


def record_loads(api, function):
    @functools.wraps(function)
    def recorded(*args, **kwargs):
        where = locate(sys._getframe(1))
        entry = {"execution": where and where[0], "dynamic": where is not None and where[0] is None,
                 "line": where and where[1], "running": running_cell(), "api": api}
        if where is not None and entry not in IMPORTS and len(IMPORTS) < MAX_RECORDS:
            IMPORTS.append(entry)
        return function(*args, **kwargs)
    return recorded


def watch_loaders():
    for name in LOADERS:
        module_name, _, attribute = name.rpartition(".")
        try:
            module = __import__(module_name, fromlist=[attribute])
            setattr(module, attribute, record_loads(name, getattr(module, attribute)))
        except (ImportError, AttributeError):
            continue


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
RECORD = []  # type: list  # the training record's module (training_record.py), given at install


def install(no_autograd, record):
    """For the rest of the kernel's life: the guard, the loaders watched, threads followed; with the
    no-autograd policy, grad mode off. `record`: the training record's module, installed already."""
    global GUARD
    SHELL[:] = [get_ipython()]  # noqa: F821  (IPython's builtin while this runs)
    RECORD[:] = [record]
    GUARD = Guard(no_autograd)
    GUARD.install()
    watch_loaders()
    follow_threads(no_autograd)
    if no_autograd:
        torch.set_grad_enabled(False)


def after_cell(index=None, execution=None):
    """What the runner collects after cell `index` (run as `execution`): the guard's new records, data
    imported, and, under the no-autograd policy, autograd in use. Also whether the guard is intact. Its
    repr is what the runner reads, as a `protocol.GuardReport` (records: `GuardRecord`s)."""
    namespace = SHELL[0].user_ns
    RECORD[0].after_cell(namespace, index, execution)
    records, GUARD.records = GUARD.records, []
    imports, IMPORTS[:] = list(IMPORTS), []
    return {"calls": records, "imports": imports, "guard_active": GUARD.active(),
            "autograd": autograd_in_use(namespace) if GUARD.no_autograd else []}
