"""The in-kernel instrumentation layer, executed in the student's kernel before the first cell. It
records what the student's code does, and after each cell reports it to the runner as data:
- the run-time guard: calls into a forbidden API that the student's code made (and, under the
  no-autograd policy, grad mode and tensors that require grad);
- imported data: tensors or arrays deserialised by notebook code (`torch.load`, pickle, numpy...);
- training evidence: for every model the student's `train` or `sgd_step` touches, checkpoints of its
  parameters and, between them, each update's learning rate and the rows of the batch it came from,
  so that the grader can retrain the graded models with its own code (grading/retrain.py).

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
import weakref

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
OWN_FILES = {"coursekit_guard", "coursekit_probe"}
MAX_RECORDS = 100  # of each kind, per cell: the runner sets protocol.MAX_GUARD_RECORDS before install()
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
            safely(autograd_backward)
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
        safely(remember_origin, thread, sys._getframe(1))
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


# Training evidence. Every model that the student's `train` or `sgd_step` touches gets a Track: its
# parameters (checkpoints) when it is first touched, at the start and end of every `train` call and
# every CHECKPOINT_EVERY updates, and between checkpoints one step per update: its learning rate and
# the batch of the backward pass that made its gradients, as one fingerprint per row (the rows
# themselves stay here). The classes the student defines with `forward` and `backward` are watched
# so that a backward pass can be tied to the input of its forward pass.
FOLLOWED = ("train", "sgd_step")
CHECKPOINT_EVERY = 256
MAX_STEPS = 500_000  # over all tracks; a track that would pass it stops recording ("overflow")
REUSED, NO_BACKWARD, UNKNOWN = -1, -2, -3  # a step without a batch: the last gradients again; none; unseen
TRACKS = {}  # type: dict[int, Track]  # id(model) -> Track
STEPS = [0]  # steps recorded, over all tracks
TRAINING = [0]  # depth of followed calls: sgd_step inside train is part of the train call
INPUTS = {}  # type: dict[int, tuple]  # id(layer) -> (weakref to the layer, weakref to the input of its last forward)
# id(layer) -> (count of its backward passes, weakref to that pass's input or None)
BACKWARDS = {}  # type: dict[int, tuple]
# set by install: the weights of a row's fingerprint (grading/retrain.py has the same)
ROW_WEIGHTS = []  # type: list[torch.Tensor]
INCOMPLETE = [False]  # a part of the recording failed: every record is incomplete, for a person to review


def safely(action, *args):
    """Run a part of the recording; if it fails, the records say they are incomplete, and the
    student's own call goes on as if nothing were watching."""
    try:
        return action(*args)
    except Exception:
        INCOMPLETE[0] = True
        return None


class Batches:
    """Batches in order, each the fingerprints of its rows or one of REUSED, NO_BACKWARD, UNKNOWN.

    A batch's rows are copied into a staging area as they come, and fingerprinted a few thousand rows at
    a time (a fingerprint per step costs several torch calls). The fingerprints go into one growing
    buffer: a small tensor kept for every step, between the training's freed temporaries, fragments
    the heap (an honest kernel grew by 2 GiB over 15,000 steps)."""

    STAGE_ROWS = 128  # fingerprinting more rows at once is slower: its temporaries leave the cache

    def __init__(self):
        self.sizes = []  # type: list[int]  # rows of each batch, or its code
        self.rows = torch.empty(1024, dtype=torch.int64)  # fingerprints, self.used of them so far
        self.used = 0
        self.stage = None  # type: torch.Tensor | None  # rows not fingerprinted yet, self.staged of them
        self.staged = 0

    def __len__(self):
        return len(self.sizes)

    def add(self, batch):
        """A batch: the input of a backward pass (a tensor), or a code."""
        if not isinstance(batch, torch.Tensor) or batch.dim() == 0:
            self.sizes.append(batch if isinstance(batch, int) else UNKNOWN)
            return
        rows = batch.detach().reshape(batch.shape[0], -1)
        count, width = rows.shape
        if width > len(ROW_WEIGHTS[0]):
            self.sizes.append(UNKNOWN)
            return
        stage = self.stage
        if stage is None or stage.shape[1] != width or self.staged + count > stage.shape[0]:
            self.flush()
            if count > self.STAGE_ROWS:
                self.add_fingerprints(fingerprints(rows))
                return
            if stage is None or stage.shape[1] != width:
                stage = self.stage = torch.empty(self.STAGE_ROWS, width)
        stage[self.staged:self.staged + count] = rows
        self.staged += count
        self.sizes.append(count)

    def add_fingerprints(self, values):
        self.flush()
        self.append(values)
        self.sizes.append(values.shape[0])

    def append(self, values):
        end = self.used + values.shape[0]
        if end > self.rows.shape[0]:
            grown = torch.empty(max(2 * self.rows.shape[0], end), dtype=torch.int64)
            grown[:self.used] = self.rows[:self.used]
            self.rows = grown
        self.rows[self.used:end] = values
        self.used = end

    def flush(self, release=False):
        """Fingerprint the staged rows; `release`: also free the staging area."""
        if self.staged:
            staged, self.staged = self.stage[:self.staged], 0
            values = safely(fingerprints, staged)  # on failure the record is incomplete: keep its shape
            self.append(values if isinstance(values, torch.Tensor) else torch.zeros(staged.shape[0], dtype=torch.int64))
        if release:
            self.stage = None

    def take_last(self, other):
        """Add the last batch of `other` (which must have one), then empty `other`."""
        size = other.sizes[-1]
        if size < 0:
            self.add(size)
        elif other.staged >= size:  # a tensor added after the last flush is the end of the stage
            self.add(other.stage[other.staged - size:other.staged])
        else:
            self.add_fingerprints(other.rows[other.used - size:other.used])
        other.clear()

    def extend(self, other, count):
        """Add the first `count` batches of `other`."""
        sizes, rows = other.prefix(count)
        self.flush()
        self.append(rows)
        self.sizes.extend(sizes)

    def clear(self):
        self.sizes.clear()
        self.used = self.staged = 0

    def prefix(self, count):
        """(sizes, fingerprints) of the first `count` batches."""
        self.flush()
        sizes = self.sizes[:count]
        return sizes, self.rows[:sum(size for size in sizes if size > 0)]


class Track:
    """One model's training by the student's code (see above)."""

    def __init__(self, model):
        self.model = model  # kept alive, so that its id stays its own
        self.checkpoints = []  # (steps before it, execution count of the running cell, parameters)
        self.lrs = []  # type: list[float]  # the learning rate of each step
        self.batches = Batches()  # the batch of each step
        self.backwards_used = 0  # the first layer's backward count at the last step
        self.in_call = None  # a train call on this model in progress: Batches of its backward passes
        self.overflow = False
        for cls in {type(layer) for layer in getattr(model, "layers", None) or ()}:
            watch_class(cls)

    def checkpoint(self):
        params = snapshot(self.model)
        last = self.checkpoints[-1] if self.checkpoints else None
        if params is not None and not (last and last[0] == len(self.lrs) and same(last[2], params)):
            self.checkpoints.append((len(self.lrs), running_cell(), params))

    def step(self, lr, batch=None, in_call=None):
        """One update that has just happened, on `batch` (an input tensor or a code) or on the last
        batch of `in_call`."""
        if not self.room(1):
            return
        self.lrs.append(rate(lr))
        if in_call is not None:
            self.batches.take_last(in_call)
        else:
            self.batches.add(batch)
        if len(self.lrs) % CHECKPOINT_EVERY == 0:
            self.checkpoint()

    def extend(self, lr, batches):
        """Updates recorded after their train call ended, one per batch (no periodic checkpoint)."""
        count = self.room(len(batches))
        self.lrs.extend([rate(lr)] * count)
        self.batches.extend(batches, count)

    def room(self, wanted):
        """How many of `wanted` more steps may be recorded (MAX_STEPS is over all tracks); fewer is an overflow."""
        count = 0 if self.overflow else max(0, min(wanted, MAX_STEPS - STEPS[0]))
        self.overflow = self.overflow or count < wanted
        STEPS[0] += count
        return count


def rate(lr):
    return float(lr) if isinstance(lr, (int, float)) else float("nan")


def snapshot(model):
    """The model's parameters, layer by layer in key order, as detached copies (None if it has none)."""
    try:
        return [layer.params[key].detach().clone() for layer in model.layers for key in sorted(layer.params)]
    except Exception:
        return None


def same(first, second):
    return (first is not None and second is not None and len(first) == len(second)
            and all(a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(first, second)))


def fingerprints(x):
    """One int64 per row of x, from its float32 bits (exact, and the same on the grader's side)."""
    rows = x.detach().reshape(x.shape[0], -1).float().contiguous()
    if rows.shape[1] > len(ROW_WEIGHTS[0]):
        return UNKNOWN
    return (rows.view(torch.int32).long() * ROW_WEIGHTS[0][:rows.shape[1]]).sum(1)


def input_of(entry):
    """A recorded input (a weakref), or UNKNOWN."""
    x = entry() if entry is not None else None
    return x if isinstance(x, torch.Tensor) else UNKNOWN


def watch_class(cls):
    """Watch a class of the student's with forward and backward methods (idempotent)."""
    if not isinstance(cls, type) or cls.__module__ != "__main__" or getattr(cls, "__coursekit_watched__", None) is cls:
        return cls
    for name, wrapper in (("forward", watched_forward), ("backward", watched_backward)):
        function = cls.__dict__.get(name)
        if callable(function) and not getattr(function, "__coursekit_watched__", False):
            setattr(cls, name, wrapper(function))
    cls.__coursekit_watched__ = cls
    return cls


def watched_forward(function):
    @functools.wraps(function)
    def forward(self, *args, **kwargs):
        if args and isinstance(args[0], torch.Tensor):
            safely(remember_input, self, args[0])
        return function(self, *args, **kwargs)
    forward.__coursekit_watched__ = True
    return forward


def watched_backward(function):
    @functools.wraps(function)
    def backward(self, *args, **kwargs):
        safely(remember_backward, self)
        return function(self, *args, **kwargs)
    backward.__coursekit_watched__ = True
    return backward


def remember_input(layer, x):
    INPUTS[id(layer)] = (weakref.ref(layer), weakref.ref(x))


def remember_backward(layer):
    """A backward pass through `layer`: count it, keep its forward's input, and inside a train call on
    the model whose first layer it is, keep its batch."""
    owner, entry = INPUTS.get(id(layer), (None, None))
    entry = entry if owner is not None and owner() is layer else None
    BACKWARDS[id(layer)] = (BACKWARDS.get(id(layer), (0, None))[0] + 1, entry)
    track = CALLING.get(id(layer))
    if track is not None and track.in_call is not None:
        track.in_call.add(input_of(entry))


CALLING = {}  # type: dict[int, Track]  # id(first layer) -> the Track of a model whose train call is in progress
AUTOGRAD_BACKWARDS = ("torch.Tensor.backward", "torch.autograd.backward")


def autograd_backward():
    """Where autograd is allowed, its backward pass stands for the layers' own: one for the first layer
    of every tracked model, on the input of its last forward pass."""
    for track in list(TRACKS.values()):
        layer = first_layer(track.model)
        if layer is not None and id(layer) in INPUTS:
            remember_backward(layer)


def first_layer(model):
    layers = getattr(model, "layers", None)
    return layers[0] if isinstance(layers, (list, tuple)) and layers else None


def track_for(model):
    if getattr(model, "layers", None) is None:
        return None
    track = TRACKS.get(id(model))
    if track is None or track.model is not model:
        track = TRACKS[id(model)] = Track(model)
    return track


def sgd_update(track, lr):
    """An update by the student's sgd_step: the batch of the last backward pass through the first
    layer that no earlier update used; without one, the last gradients again, or none at all."""
    layer = first_layer(track.model)
    count, entry = BACKWARDS.get(id(layer), (0, None))
    fresh, track.backwards_used = count > track.backwards_used, count
    if track.in_call:
        track.step(lr, in_call=track.in_call)
        track.in_call.clear()  # if the step was not recorded
    elif fresh and track.in_call is None:
        track.step(lr, input_of(entry))
    elif getattr(type(layer), "__coursekit_watched__", None) is not type(layer):
        track.step(lr, UNKNOWN)
    else:
        track.step(lr, REUSED if count else NO_BACKWARD)


LR_POSITIONS = {}  # type: dict[object, int | None]  # a followed function's code -> where its `lr` is (None: nowhere)


def learning_rate(function, args, kwargs):
    """The `lr` of a call (None if not given), without binding the signature on every call."""
    if "lr" in kwargs:
        return kwargs["lr"]
    key = getattr(function, "__code__", function)
    if key not in LR_POSITIONS:
        try:
            names = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            names = []
        LR_POSITIONS[key] = names.index("lr") if "lr" in names else None
    position = LR_POSITIONS[key]
    return args[position] if position is not None and position < len(args) else None


def follow(kind, function):
    """`function` (the student's train or sgd_step), recording each call on a model (see above)."""
    if getattr(function, "__coursekit_followed__", False) or not callable(function):
        return function

    @functools.wraps(function)
    def followed(*args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        track = safely(track_for, model) if not (kind == "train" and TRAINING[0]) else None
        if track is None:
            return function(*args, **kwargs)
        lr = safely(learning_rate, function, args, kwargs)
        if kind == "train":
            return followed_train(track, function, lr, args, kwargs)
        if not track.checkpoints:
            safely(track.checkpoint)
        result = function(*args, **kwargs)
        safely(sgd_update, track, lr)
        return result

    followed.__coursekit_followed__ = True
    return followed


def followed_train(track, function, lr, args, kwargs):
    """A train call: checkpoints around it; updates it made without sgd_step use its learning rate."""
    safely(track.checkpoint)
    layer, steps_before = first_layer(track.model), len(track.lrs)
    track.in_call, CALLING[id(layer)] = Batches(), track
    TRAINING[0] += 1
    try:
        return function(*args, **kwargs)
    finally:
        TRAINING[0] -= 1
        inline, track.in_call = track.in_call, None
        CALLING.pop(id(layer), None)
        safely(end_of_call, track, lr, inline, len(track.lrs) == steps_before)


def end_of_call(track, lr, inline, without_sgd_step):
    if without_sgd_step:
        track.extend(lr, inline)
    track.batches.flush(release=True)
    track.backwards_used = BACKWARDS.get(id(first_layer(track.model)), (0, None))[0]
    track.checkpoint()


def follow_definitions(namespace):
    for name in FOLLOWED:
        if name in namespace:
            namespace[name] = follow(name, namespace[name])
    for value in list(namespace.values()):
        if isinstance(value, type) and value.__module__ == "__main__" and callable(getattr(value, "backward", None)):
            watch_class(value)


class FollowDefinitions:
    """An IPython AST transformer: after a top-level `def train` / `def sgd_step`, the function is
    followed at once, and after a top-level class, it is watched (a cell may define and use them)."""

    def visit(self, tree):
        import ast
        body = []
        for node in tree.body:
            body.append(node)
            if isinstance(node, ast.FunctionDef) and node.name in FOLLOWED:
                code = f"{node.name} = __coursekit_guard.follow({node.name!r}, {node.name})"
            elif isinstance(node, ast.ClassDef):
                code = f"__coursekit_guard.watch_class({node.name})"
            else:
                continue
            body.append(ast.copy_location(ast.parse(code).body[0], node))
        tree.body = body
        return ast.fix_missing_locations(tree)


def find_state(params):
    """(track, checkpoint position) of a checkpoint equal to params, preferring the latest."""
    for track in TRACKS.values():
        for position in range(len(track.checkpoints) - 1, -1, -1):
            if same(params, track.checkpoints[position][2]):
                return track, position
    return None, None


def export_training(namespace, names, rec):
    """For each graded model: the record of the training that produced its parameters, up to the
    checkpoint equal to them (see grading/retrain.py for how the grader reads it)."""
    for track in TRACKS.values():
        track.checkpoint()
    for name in names:
        model = namespace.get(name)
        own = TRACKS.get(id(model))
        track, position = find_state(snapshot(model)) if getattr(model, "layers", None) is not None else (None, None)
        if track is None:
            rec.meta[name] = {"trained": False, "own_object_trained": own is not None and own.model is model}
            continue
        export_track(rec, name, track, position)


def export_track(rec, name, track, position):
    checkpoints = track.checkpoints[:position + 1]
    count = checkpoints[-1][0]
    sizes, rows = track.batches.prefix(count)
    rec.meta[name] = {"trained": True, "overflow": track.overflow or INCOMPLETE[0],
                      "checkpoints": [{"step": step, "cell": CELLS.get(cell)} for step, cell, _ in checkpoints]}
    for index, (_, _, params) in enumerate(checkpoints):
        for order, value in enumerate(params):
            rec.value(f"{name}.checkpoint.{index}.{order}", value)
    rec.value(f"{name}.lr", torch.tensor(track.lrs[:count], dtype=torch.float64))
    rec.value(f"{name}.batch_sizes", torch.tensor(sizes, dtype=torch.int64))
    rec.value(f"{name}.rows", rows.clone())


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
# the kernel's execution count -> the cell's index in the notebook (told by the runner)
CELLS = {}  # type: dict[int, int]


def install(no_autograd, fingerprint_seed, fingerprint_bits, fingerprint_width):
    """For the rest of the kernel's life: the guard, the loaders watched, threads followed, train
    and sgd_step followed from their definition; with the no-autograd policy, grad mode off."""
    global GUARD
    SHELL[:] = [get_ipython()]  # noqa: F821  (IPython's builtin while this runs)
    generator = torch.Generator().manual_seed(fingerprint_seed)
    ROW_WEIGHTS[:] = [torch.randint(0, 2 ** fingerprint_bits, (fingerprint_width,), generator=generator)]
    GUARD = Guard(no_autograd)
    GUARD.install()
    watch_loaders()
    follow_threads(no_autograd)
    SHELL[0].ast_transformers.append(FollowDefinitions())
    if no_autograd:
        torch.set_grad_enabled(False)


def after_cell(index=None, execution=None):
    """What the runner collects after cell `index` (run as `execution`): the guard's new records, data
    imported, and, under the no-autograd policy, autograd in use. Also whether the guard is intact. Its
    repr is what the runner reads, as a `protocol.GuardReport` (records: `GuardRecord`s)."""
    if isinstance(execution, int):
        CELLS[execution] = index
    namespace = SHELL[0].user_ns
    follow_definitions(namespace)
    for track in TRACKS.values():
        safely(track.batches.flush, True)
    records, GUARD.records = GUARD.records, []
    imports, IMPORTS[:] = list(IMPORTS), []
    return {"calls": records, "imports": imports, "guard_active": GUARD.active(),
            "autograd": autograd_in_use(namespace) if GUARD.no_autograd else []}
