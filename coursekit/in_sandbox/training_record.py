"""The training record, executed in the student's kernel as the module `coursekit_record` before the guard
(instrument.py, which installs it): for every model the student's `train` or `sgd_step` touches,
checkpoints of its parameters and, between them, each update's learning rate and the rows of the batch it
came from, so that the grader can retrain the graded models with its own code (grading/retrain.py).

Like instrument.py and probes.py, it is executed as source in the kernel and imports nothing from
`coursekit`: its frames are the grader's own (file name `coursekit_record`), never the student's.
"""
import functools
import inspect
import weakref

import torch

# the kernel's IPython shell, kept at install: `get_ipython` is a builtin only while a cell runs
SHELL = []  # type: list
# the kernel's execution count -> the cell's index in the notebook (told by the runner after each cell)
CELLS = {}  # type: dict[int, int]


def running_cell():
    """The execution count of the cell now running (IPython counts it up before the cell runs)."""
    return SHELL[0].execution_count - 1


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
# set by install: the weights of a row's fingerprint, and how many of a wide row's values it takes
# (grading/retrain.py has the same: see protocol.FINGERPRINT_COLUMNS)
ROW_WEIGHTS = []  # type: list[torch.Tensor]
COLUMNS = []  # type: list[int]
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

    A batch is fingerprinted when its update takes it (held any longer, it could change in place, and
    the memory it keeps from the allocator slows the student's training more than a fingerprint does).
    The fingerprints go into one growing buffer, as the float64 values they are computed in (exact, see
    weighed): a small tensor kept for every step, between the training's freed temporaries, fragments
    the heap (an honest kernel grew by 2 GiB over 15,000 steps)."""

    def __init__(self):
        self.sizes = []  # type: list[int]  # rows of each batch, or its code
        self.rows = torch.empty(1024, dtype=torch.float64)  # fingerprints, self.used of them so far
        self.used = 0

    def __len__(self):
        return len(self.sizes)

    def add(self, batch):
        """A batch: the input of a backward pass (a tensor), or a code."""
        rows = flat(batch)
        if rows is None:
            self.sizes.append(batch if isinstance(batch, int) else UNKNOWN)
            return
        count = rows.shape[0]
        end = self.used + count
        if end > self.rows.shape[0]:
            self.grow(end)
        weighed(sampled(rows), out=self.rows[self.used:end])
        self.used = end
        self.sizes.append(count)

    def grow(self, size):
        grown = torch.empty(max(2 * self.rows.shape[0], size), dtype=torch.float64)
        grown[:self.used] = self.rows[:self.used]
        self.rows = grown

    def take_last(self, other):
        """Add the last batch of `other` (a CallBatches with at least one), then empty `other`."""
        self.add(other.take_pending() if other.pending is not None else other.sizes[-1])
        other.clear()

    def extend(self, other, count):
        """Add the first `count` batches of `other`."""
        sizes, rows = other.prefix(count)
        end = self.used + rows.shape[0]
        if end > self.rows.shape[0]:
            self.grow(end)
        self.rows[self.used:end] = rows
        self.used = end
        self.sizes.extend(sizes)

    def clear(self):
        self.sizes.clear()
        self.used = 0

    def prefix(self, count):
        """(sizes, fingerprints as int64) of the first `count` batches."""
        sizes = self.sizes[:count]
        return sizes, self.rows[:sum(size for size in sizes if size > 0)].long()


class CallBatches(Batches):
    """The backward passes of a train call. The last one is kept as it is until an update takes it (the
    usual case) or another one comes (it is then fingerprinted like any other)."""

    def __init__(self):
        super().__init__()
        self.pending = None  # type: tuple | None  # (the last batch, its version when it came)

    def __len__(self):
        return len(self.sizes) + (self.pending is not None)

    def add(self, batch):
        if self.pending is not None:
            self.stage_pending()
        if isinstance(batch, torch.Tensor) and batch.dim():
            self.pending = (batch, version(batch))
        else:
            super().add(batch)

    def take_pending(self):
        """The pending batch, or UNKNOWN if it was changed in place since (its rows are gone)."""
        batch, seen = self.pending
        self.pending = None
        return batch if version(batch) == seen else UNKNOWN

    def stage_pending(self):
        if self.pending is not None:
            super().add(self.take_pending())

    def prefix(self, count):
        self.stage_pending()
        return super().prefix(count)

    def clear(self):
        self.pending = None
        super().clear()


def version(tensor):
    """How many times the tensor was changed in place (None: not counted, as in inference mode)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


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


def flat(batch):
    """A batch's rows, one per row of the result (a view where it can be); None if it is not a batch or
    its rows are too wide."""
    if not isinstance(batch, torch.Tensor) or batch.dim() == 0:
        return None
    rows = batch if batch.dim() == 2 else batch.reshape(batch.shape[0], -1)
    if rows.shape[1] > ROW_WEIGHTS[0].shape[0]:
        return None
    return rows.detach() if rows.requires_grad else rows


def sampled(rows):
    """The values of each row that its fingerprint takes: of a wide row every k-th (see COLUMNS), as float32."""
    stride = rows.shape[1] // COLUMNS[0]
    taken = rows[:, ::stride] if stride > 1 else rows
    return taken if taken.dtype == torch.float32 else taken.float()


def weighed(taken, out=None):
    """Sampled rows -> one whole number per row, in float64: the int32 bits of their float32 values times
    whole-number weights, summed in float64, which is exact (|bits| < 2**31, weights < 2**FINGERPRINT_BITS,
    at most FINGERPRINT_WIDTH of them: the sum stays below 2**53), so it is the grader's whatever the order
    of the sum."""
    bits = taken.view(torch.int32).double()
    return torch.mv(bits, weights_for(bits.shape[1]), out=out)


def weights_for(width):
    weights = WEIGHTS_BY_WIDTH.get(width)
    if weights is None:
        weights = WEIGHTS_BY_WIDTH[width] = ROW_WEIGHTS[0][:width]
    return weights


WEIGHTS_BY_WIDTH = {}  # type: dict[int, torch.Tensor]  # the first ROW_WEIGHTS, by how many


def fingerprints(x):
    """One int64 per row of x (grading/retrain.py computes the same), or UNKNOWN."""
    rows = flat(x.reshape(x.shape[0], -1))
    return UNKNOWN if rows is None else weighed(sampled(rows)).long()


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
            try:  # inline, not safely(): this runs for every layer on every step
                INPUTS[id(self)] = (weakref.ref(self), weakref.ref(args[0]))
            except Exception:
                INCOMPLETE[0] = True
        return function(self, *args, **kwargs)
    forward.__coursekit_watched__ = True
    return forward


def watched_backward(function):
    @functools.wraps(function)
    def backward(self, *args, **kwargs):
        try:
            remember_backward(self)
        except Exception:
            INCOMPLETE[0] = True
        return function(self, *args, **kwargs)
    backward.__coursekit_watched__ = True
    return backward


def remember_backward(layer):
    """A backward pass through `layer`: count it, keep its forward's input, and inside a train call on
    the model whose first layer it is, keep its batch."""
    key = id(layer)
    owner, entry = INPUTS.get(key, NOTHING)
    if owner is None or owner() is not layer:
        entry = None
    BACKWARDS[key] = (BACKWARDS.get(key, NOTHING)[0] + 1, entry)
    track = CALLING.get(key)
    if track is not None and track.in_call is not None:
        track.in_call.add(input_of(entry))


NOTHING = (0, None)  # what INPUTS and BACKWARDS hold for a layer not seen yet (an owner of 0 is none)


CALLING = {}  # type: dict[int, Track]  # id(first layer) -> the Track of a model whose train call is in progress


def autograd_backward():
    """Where autograd is allowed, its backward pass stands for the layers' own (see backwards_of_autograd)."""
    safely(backwards_of_autograd)


def backwards_of_autograd():
    """One backward pass for the first layer of every tracked model, on the input of its last forward pass."""
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
    in_call = track.in_call
    if in_call is not None and in_call.pending is not None and not in_call.sizes:
        track.step(lr, in_call.take_pending())  # the usual update in a train call, on its one batch
        return
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


def lr_position(function):
    """Where a function takes its `lr` among its positional arguments (None: nowhere)."""
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("lr") if "lr" in names else None


def follow(kind, function):
    """`function` (the student's train or sgd_step), recording each call on a model (see above). The
    recording's parts are inline, not through safely(): sgd_step runs on every step."""
    if getattr(function, "__coursekit_followed__", False) or not callable(function):
        return function
    position = lr_position(function)

    @functools.wraps(function)
    def followed(*args, **kwargs):
        try:
            track = None if kind == "train" and TRAINING[0] else track_for(args[0] if args else kwargs.get("model"))
            given = position is not None and position < len(args)
            lr = kwargs["lr"] if "lr" in kwargs else args[position] if given else None
        except Exception:
            track, INCOMPLETE[0] = None, True
        if track is None:
            return function(*args, **kwargs)
        if kind == "train":
            return followed_train(track, function, lr, args, kwargs)
        if not track.checkpoints:
            safely(track.checkpoint)
        result = function(*args, **kwargs)
        try:
            sgd_update(track, lr)
        except Exception:
            INCOMPLETE[0] = True
        return result

    followed.__coursekit_followed__ = True
    return followed


def followed_train(track, function, lr, args, kwargs):
    """A train call: checkpoints around it; updates it made without sgd_step use its learning rate."""
    safely(track.checkpoint)
    layer, steps_before = first_layer(track.model), len(track.lrs)
    track.in_call, CALLING[id(layer)] = CallBatches(), track
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
                code = f"{node.name} = __coursekit_record.follow({node.name!r}, {node.name})"
            elif isinstance(node, ast.ClassDef):
                code = f"__coursekit_record.watch_class({node.name})"
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


def install(shell, fingerprint_seed, fingerprint_bits, fingerprint_width, fingerprint_columns):
    """For the rest of the kernel's life: train and sgd_step followed from their definition, and the
    weights of a row's fingerprint (grading/retrain.py draws the same)."""
    SHELL[:] = [shell]
    COLUMNS[:] = [fingerprint_columns]
    WEIGHTS_BY_WIDTH.clear()
    generator = torch.Generator().manual_seed(fingerprint_seed)
    ROW_WEIGHTS[:] = [torch.randint(0, 2 ** fingerprint_bits, (fingerprint_width,), generator=generator).double()]
    shell.ast_transformers.append(FollowDefinitions())


def after_cell(namespace, index, execution):
    """After cell `index` (run as `execution`): follow what it defined."""
    if isinstance(execution, int):
        CELLS[execution] = index
    follow_definitions(namespace)
