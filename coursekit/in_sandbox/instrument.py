"""The in-kernel instrumentation layer, executed in the student's kernel before the first cell. It
records what the student's code does, and after each cell reports it to the runner as data:
- the run-time guard: every call into a forbidden API whose direct caller is notebook code (and,
  under the no-autograd policy, grad mode and tensors that require grad);
- imported data: tensors or arrays deserialised by notebook code (`torch.load`, pickle, numpy...);
- training provenance: for every model, the training calls of the student's own `train` and
  `sgd_step` on it (the parameters before and after each), so that the grader can tell a model
  trained from scratch in this run from weights brought in from elsewhere.

The guard sees what the static scan cannot (`getattr(torch, name)`, `exec`, `importlib`, Tensor
methods): before the first cell it replaces every forbidden API (module functions, Tensor methods and
properties) by a wrapper that records its caller, so the student's code pays nothing for allowed
operations. The caller is the first frame outside torch itself: a cell (the runner maps it to its
index), code with no file of its own (`exec`, `eval`: "dynamic", charged to the cell running), or a
library (fastai's data loading: not the student's). Like probe.py, this module is executed as source
in the kernel and imports nothing from `coursekit`; the grader decides what a record costs.
"""
import copy
import functools
import inspect
import math
import os
import sys

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
            for key in dir(module):
                value = getattr(module, key)
                if (not key.startswith("_") and callable(value) and not isinstance(value, type)
                        and str(getattr(value, "__module__", "")).startswith("torch")):
                    yield module, key, None, f"{path}.{key}", rule
        elif last in ("__get__", "__set__"):
            owner_path, _, attribute = path.rpartition(".")
            yield resolve_name(owner_path), attribute, last, path, rule
        elif resolve_name(name) is not None:
            yield resolve_name(path), last, None, name, rule


class Guard:
    """Every forbidden API replaced by a wrapper that records who called it (see the module's doc)."""

    def __init__(self, no_autograd):
        self.no_autograd = no_autograd
        self.records, self.seen = [], set()
        self.inside = 0  # a forbidden call in progress: what it calls itself is not the student's
        self.patched = []  # (owner, attribute, original, replacement)

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

    def patch(self, owner, attribute, replacement):
        self.patched.append((owner, attribute, inspect.getattr_static(owner, attribute), replacement))
        setattr(owner, attribute, replacement)

    def active(self):
        return all(inspect.getattr_static(owner, attribute, None) is replacement
                   for owner, attribute, _, replacement in self.patched)

    def uninstall(self):
        for owner, attribute, original, _ in reversed(self.patched):
            setattr(owner, attribute, original)
        self.patched = []

    def wrap(self, function, api, rule):
        guard = self

        def guarded(*args, **kwargs):
            if not guard.inside:
                guard.check(api, rule, args)
            guard.inside += 1
            try:
                return function(*args, **kwargs)
            finally:
                guard.inside -= 1
        guarded.__name__ = getattr(function, "__name__", api.rpartition(".")[2])
        guarded.__doc__ = getattr(function, "__doc__", None)
        return guarded

    def check(self, api, rule, args):
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


# Deserialisers, as data: a call from notebook code to any of them is recorded, for review.
LOADERS = ("torch.load", "torch.serialization.load", "numpy.load", "numpy.fromfile", "pickle.load", "pickle.loads",
           "safetensors.torch.load_file", "safetensors.torch.load", "safetensors.numpy.load_file",
           "base64.b64decode", "base64.b85decode", "base64.a85decode", "base64.decodebytes")
IMPORTS = []


def record_loads(api, function):
    @functools.wraps(function)
    def recorded(*args, **kwargs):
        where = locate(sys._getframe(1))
        if where is not None and len(IMPORTS) < MAX_RECORDS:
            IMPORTS.append({"execution": where[0], "dynamic": where[0] is None, "line": where[1],
                            "running": running_cell(), "api": api})
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


# Training provenance: the student's `train` and `sgd_step` are followed from the cell that defines them.
FOLLOWED = ("train", "sgd_step")
MAX_TRAIN_CALLS = 200
TRACKS = {}  # id(model) -> Track
TRAINING = [0]  # depth of followed calls: sgd_step inside train is part of the train call


class Track:
    """One model's training by the student's code: where it began, where it last left the
    parameters, whether they changed between two training calls, and the `train` calls to replay."""

    def __init__(self, model):
        self.model = model  # kept alive, so that its id stays its own
        self.first_start = self.last_end = self.began_in = self.replaced_in = None
        self.events, self.calls = 0, []


def snapshot(model):
    """The model's parameters, layer by layer in key order, as detached copies (None if it has none)."""
    try:
        return [layer.params[key].detach().clone() for layer in model.layers for key in sorted(layer.params)]
    except Exception:
        return None


def same(first, second):
    return (first is not None and second is not None and len(first) == len(second)
            and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second)))


def follow(kind, function):
    """`function` (the student's train or sgd_step), recording each outermost call on a model."""
    if getattr(function, "__coursekit_followed__", False) or not callable(function):
        return function

    @functools.wraps(function)
    def followed(*args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        if TRAINING[0] or getattr(model, "layers", None) is None:
            return function(*args, **kwargs)
        track = TRACKS.get(id(model))
        if track is None or track.model is not model:
            track = TRACKS[id(model)] = Track(model)
        start = snapshot(model)
        if track.first_start is None:
            track.first_start, track.began_in = start, running_cell()
        elif not same(start, track.last_end) and track.replaced_in is None:
            track.replaced_in = running_cell()
        TRAINING[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            TRAINING[0] -= 1
            track.last_end, track.events = snapshot(model), track.events + 1
            if kind == "train" and len(track.calls) < MAX_TRAIN_CALLS:
                track.calls.append((function, args, kwargs, start, track.last_end))

    followed.__coursekit_followed__ = True
    return followed


def follow_definitions(namespace):
    for name in FOLLOWED:
        if name in namespace:
            namespace[name] = follow(name, namespace[name])


class FollowDefinitions:
    """An IPython AST transformer: after a top-level `def train` / `def sgd_step` in a cell, the
    function is followed at once (a cell may define train and use it)."""

    def visit(self, tree):
        import ast
        body = []
        for node in tree.body:
            body.append(node)
            if isinstance(node, ast.FunctionDef) and node.name in FOLLOWED:
                call = ast.parse(f"{node.name} = __coursekit_guard.follow({node.name!r}, {node.name})").body[0]
                body.append(ast.copy_location(call, node))
        tree.body = body
        return ast.fix_missing_locations(tree)


def track_of(model):
    """The track of the model object itself, else of a model whose training left exactly its
    parameters (a copy, or a Sequential rebuilt from trained layers)."""
    track = TRACKS.get(id(model))
    if track is not None and track.model is model:
        return track
    current = snapshot(model)
    return next((t for t in TRACKS.values() if same(current, t.last_end)), None)


def replica(model, start):
    """A copy of model whose parameters are `start`: a deep copy, or where the model holds tensors that
    cannot be deep-copied (a graph, where autograd is allowed), a copy of each layer with new params."""
    try:
        copied = copy.deepcopy(model)
    except RuntimeError:
        copied = copy.copy(model)
        copied.layers = [copy.copy(layer) for layer in model.layers]
        for layer in copied.layers:
            layer.params = dict(layer.params)
    values = iter(start)
    for layer in copied.layers:
        for key in sorted(layer.params):
            layer.params[key] = next(values).clone()
    return copied


def replay(track):
    """Each recorded `train` call again, from its recorded start: the largest difference from the
    parameters it left, and the largest parameter (for a relative tolerance)."""
    worst, scale = 0.0, 0.0
    TRAINING[0] += 1
    try:
        for function, args, kwargs, start, end in track.calls:
            model = replica(track.model, start)
            if args:
                function(model, *args[1:], **kwargs)
            else:
                function(**{**kwargs, "model": model})
            for replayed, recorded in zip(snapshot(model), end):
                worst = max(worst, float((replayed.double() - recorded.double()).abs().max()))
                scale = max(scale, float(recorded.double().abs().max()))
    finally:
        TRAINING[0] -= 1
    return worst, scale


def export_training(namespace, names, rec):
    """For each graded model: how it was trained, and its parameters when training began."""
    for name in names:
        model = namespace.get(name)
        track = track_of(model) if getattr(model, "layers", None) is not None else None
        if track is None:
            rec.meta[name] = {"trained": False, "own_object_trained": id(model) in TRACKS}
            continue
        changed_after = not same(snapshot(model), track.last_end)
        difference, scale = replay(track) if track.calls else (0.0, 0.0)
        rec.meta[name] = {"trained": True, "events": track.events, "train_calls": len(track.calls),
                          "changed_after": changed_after,
                          "began_in": CELLS.get(track.began_in), "replaced_in": CELLS.get(track.replaced_in),
                          "replay_difference": difference if math.isfinite(difference) else 1e30,
                          "replay_scale": scale}
        for position, value in enumerate(track.first_start or []):
            rec.value(f"{name}.start.{position}", value)


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
CELLS = {}  # the kernel's execution count -> the cell's index in the notebook (told by the runner)


def install(no_autograd):
    """For the rest of the kernel's life: push the guard, watch the loaders, follow train and
    sgd_step from their definition; with the no-autograd policy, grad mode off."""
    global GUARD
    GUARD = Guard(no_autograd)
    GUARD.install()
    watch_loaders()
    get_ipython().ast_transformers.append(FollowDefinitions())  # noqa: F821
    if no_autograd:
        torch.set_grad_enabled(False)


def after_cell(index=None, execution=None):
    """What the runner collects after cell `index` (run as `execution`): the guard's new records, data
    imported, and, under the no-autograd policy, autograd in use. Also whether the guard is in place."""
    if isinstance(execution, int):
        CELLS[execution] = index
    namespace = get_ipython().user_ns  # noqa: F821
    follow_definitions(namespace)
    records, GUARD.records = GUARD.records, []
    imports, IMPORTS[:] = list(IMPORTS), []
    return {"calls": records, "imports": imports, "guard_active": GUARD.active(),
            "autograd": autograd_in_use(namespace) if GUARD.no_autograd else []}
