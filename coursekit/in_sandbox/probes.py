"""Probes, run in the student's kernel after the notebook: call the contract names on the grader's
inputs and export what they return as plain tensors (safetensors) plus a JSON description.

Nothing here judges: the grader compares the exported values with its own reference outside the sandbox. Under
the no-autograd policy each probe runs under `torch.inference_mode()`, so student code that relies on autograd
fails here. This module is executed as source inside the kernel; it imports nothing from `coursekit` (the
runner passes it what it needs of `protocol`).
"""
import json
import traceback
import types

import torch
from safetensors.torch import load_file, save_file

CONTRACT_NAMES = ("Linear", "ReLU", "Sequential", "log_softmax", "MSELoss", "CrossEntropyLoss",
                  "sgd_step", "train", "accuracy")
MODELS = ("regression_model", "logistic_model", "mlp_model")


def user_namespace():
    return get_ipython().user_ns  # noqa: F821  (IPython builtin in the kernel)


class Recorder:
    """Collects exported tensors and a JSON-able description of what each step returned."""

    def __init__(self):
        self.tensors, self.meta = {}, {}

    def value(self, key, obj):
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        entry = {"type": kind}
        if type(obj) is torch.Tensor:
            entry.update(shape=list(obj.shape), dtype=str(obj.dtype).replace("torch.", ""),
                         requires_grad=bool(obj.requires_grad), grad_fn=obj.grad_fn is not None)
            self.tensors[key] = obj.detach().clone().contiguous()
        elif type(obj) in (float, int, bool):
            entry["value"] = obj
        elif type(obj) is dict:
            entry["keys"] = sorted(map(str, obj))
        elif type(obj) in (list, tuple):
            entry["length"] = len(obj)
            entry["item_types"] = sorted({f"{type(v).__module__}.{type(v).__qualname__}" for v in obj})
            if all(type(v) in (float, int) for v in obj) and obj:
                self.tensors[key] = torch.tensor([float(v) for v in obj], dtype=torch.float64)
        self.meta[key] = entry

    def step(self, key, function, *args):
        """Call function(*args); record its result under key, or the error it raised."""
        try:
            result = function(*args)
        except Exception as error:  # the student's code failing is the information we want
            frames = traceback.extract_tb(error.__traceback__)
            where = next((f"line {f.lineno}: {f.line}" for f in reversed(frames) if f.filename.startswith("<")), "")
            self.meta[key] = {"error": f"{type(error).__name__}: {error}"[:400], "where": where[:200]}
            return None
        self.value(key, result)
        return result

    def save(self, directory, name):
        save_file(self.tensors, f"{directory}/{name}.safetensors")
        with open(f"{directory}/{name}.json", "w") as handle:
            json.dump(self.meta, handle)


def set_params(layer, params):
    for key, value in params.items():
        layer.params[key].copy_(value)


def export_layer_params(rec, prefix, layer):
    rec.meta[f"{prefix}.class"] = {"type": type(layer).__qualname__}
    rec.meta[f"{prefix}.keys"] = {"value": sorted(map(str, getattr(layer, "params", {}) or {}))}
    for key in getattr(layer, "params", {}) or {}:
        rec.value(f"{prefix}.params.{key}", layer.params[key])


def probe_names(ns, inputs, rec):
    for name in CONTRACT_NAMES + MODELS:
        obj = ns.get(name)
        rec.meta[name] = {"defined": name in ns, "module": getattr(obj, "__module__", None),
                          "kind": "class" if isinstance(obj, type) else type(obj).__qualname__}


def probe_linear(ns, inputs, rec):
    n_in, n_out = inputs["lin.W"].shape
    layer = rec.step("init", ns["Linear"], n_in, n_out)
    export_layer_params(rec, "init", layer)
    set_params(layer, {"W": inputs["lin.W"], "b": inputs["lin.b"]})
    rec.step("forward", layer.forward, inputs["lin.x"])
    rec.step("backward", layer.backward, inputs["lin.g"])
    for key in ("W", "b"):
        rec.step(f"grads.{key}", lambda k=key: layer.grads[k])


def probe_relu(ns, inputs, rec):
    layer = rec.step("init", ns["ReLU"])
    rec.step("params", lambda: dict(layer.params))
    rec.step("forward", layer.forward, inputs["relu.x"])
    rec.step("backward", layer.backward, inputs["relu.g"])


def probe_sequential(ns, inputs, rec):
    first, second = ns["Linear"](*inputs["seq.W1"].shape), ns["Linear"](*inputs["seq.W2"].shape)
    set_params(first, {"W": inputs["seq.W1"], "b": inputs["seq.b1"]})
    set_params(second, {"W": inputs["seq.W2"], "b": inputs["seq.b2"]})
    model = rec.step("init", ns["Sequential"], first, ns["ReLU"](), second)
    rec.meta["layers"] = {"type": type(getattr(model, "layers", None)).__qualname__,
                          "length": len(getattr(model, "layers", None) or ())}
    rec.step("forward", model.forward, inputs["seq.x"])
    rec.step("backward", model.backward, inputs["seq.g"])
    rec.step("grads.W1", lambda: first.grads["W"])
    rec.step("grads.b2", lambda: second.grads["b"])


def probe_log_softmax(ns, inputs, rec):
    rec.step("small", ns["log_softmax"], inputs["ls.z"])
    rec.step("large", ns["log_softmax"], inputs["ls.large"])


def probe_mse_loss(ns, inputs, rec):
    for shape in ("column", "flat"):
        pred = inputs["mse.pred"] if shape == "column" else inputs["mse.pred"].reshape(-1)
        loss = rec.step(f"{shape}.init", ns["MSELoss"])
        rec.step(f"{shape}.forward", loss.forward, pred, inputs["mse.target"])
        rec.step(f"{shape}.backward", loss.backward)


def probe_cross_entropy_loss(ns, inputs, rec):
    for case in ("random", "zeros"):
        logits = inputs["ce.z"] if case == "random" else torch.zeros_like(inputs["ce.z"])
        loss = rec.step(f"{case}.init", ns["CrossEntropyLoss"])
        rec.step(f"{case}.forward", loss.forward, logits, inputs["ce.y"])
        rec.step(f"{case}.backward", loss.backward)


def probe_sgd_step(ns, inputs, rec):
    layers = [types.SimpleNamespace(params={"W": inputs["sgd.W"].clone(), "b": inputs["sgd.b"].clone()},
                                    grads={"W": inputs["sgd.gW"], "b": inputs["sgd.gb"]}),
              types.SimpleNamespace(params={}, grads={})]
    model = types.SimpleNamespace(layers=layers)
    rec.step("call", ns["sgd_step"], model, float(inputs["sgd.lr"]))
    rec.step("W", lambda: layers[0].params["W"])
    rec.step("b", lambda: layers[0].params["b"])


def row_positions(batch, rows):
    """The position in `rows` of each row of `batch` (-1 where there is none)."""
    equal = (batch.reshape(len(batch), 1, -1) == rows.reshape(1, len(rows), -1)).all(2)
    return torch.where(equal.any(1), equal.long().argmax(1), -1)


class ProbeScale:
    """A model of the grader's for probing `train` on its own (none of the assignment's layers): it
    weighs each feature by `s` and adds `c`. It remembers the rows of `data` that each backward pass
    came from, so that the grader can redo the training on the same batches."""

    def __init__(self, s, c, data):
        self.params, self.grads, self.data, self.batches = {"s": s.clone(), "c": c.clone()}, {}, data, []
        self.forwards = []  # the batches of its forward passes: where autograd (when allowed) did the backward

    def forward(self, x):
        self.x = x
        self.forwards.append(row_positions(x, self.data))
        return (x * self.params["s"]).sum(1, keepdim=True) + self.params["c"]

    def backward(self, grad_out):
        self.batches.append(row_positions(self.x, self.data))
        self.grads = {"s": (self.x * grad_out).sum(0), "c": grad_out.sum(0)}
        return grad_out * self.params["s"]


class ProbeModel:
    def __init__(self, s, c, data):
        self.layers = [ProbeScale(s, c, data)]

    def forward(self, x):
        return self.layers[0].forward(x)

    def backward(self, grad_out):
        return self.layers[0].backward(grad_out)


class ProbeLoss:
    """Half the mean squared error (not the assignment's MSELoss)."""

    def forward(self, pred, target):
        self.diff = pred.reshape(-1) - target
        return self.diff.square().mean() / 2

    def backward(self):
        return (self.diff / self.diff.numel()).reshape(-1, 1)


def probe_train(ns, inputs, rec):
    x, y = inputs["train.x"], inputs["train.y"]
    settings = dict(lr=float(inputs["train.lr"]), epochs=int(inputs["train.epochs"]),
                    batch_size=int(inputs["train.batch_size"]))
    for run, seed in (("first", 0), ("again", 0), ("other_seed", 1)):
        model = ProbeModel(inputs["train.s"], inputs["train.c"], x)
        rec.step(f"{run}.losses", lambda: ns["train"](model, ProbeLoss(), x, y, seed=seed, **settings))
        rec.value(f"{run}.s", model.layers[0].params["s"])
        rec.value(f"{run}.c", model.layers[0].params["c"])
        batches = model.layers[0].batches or model.layers[0].forwards
        rec.value(f"{run}.batch_sizes", torch.tensor([len(b) for b in batches], dtype=torch.int64))
        rec.value(f"{run}.batches", torch.cat(batches) if batches else torch.zeros(0, dtype=torch.int64))


def probe_accuracy(ns, inputs, rec):
    rec.step("value", ns["accuracy"], inputs["acc.z"], inputs["acc.y"])


def probe_models(ns, inputs, rec):
    for name in MODELS:
        model = ns.get(name)
        layers = getattr(model, "layers", None)
        if not isinstance(layers, (list, tuple)):
            rec.meta[name] = {"error": f"{name} is missing or has no list of .layers"}
            continue
        rec.meta[name] = {"layers": [type(layer).__qualname__ for layer in layers]}
        for position, layer in enumerate(layers):
            export_layer_params(rec, f"{name}.{position}", layer)


def probe_provenance(ns, inputs, rec):
    """How each graded model was trained (the instrumentation layer followed train and sgd_step)."""
    ns["__coursekit_record"].export_training(ns, MODELS, rec)


PROBES = {name[len("probe_"):]: function for name, function in dict(globals()).items()
          if name.startswith("probe_") and callable(function)}


def run(name, directory, inputs_file, no_autograd=True):
    """Run one probe; under the no-autograd policy, in inference mode (code that needs autograd fails)."""
    inputs = load_file(f"{directory}/{inputs_file}")
    rec = Recorder()
    try:
        with torch.inference_mode(no_autograd):
            PROBES[name](user_namespace(), inputs, rec)
    except Exception as error:
        rec.meta["error"] = f"{type(error).__name__}: {error}"[:400]
    rec.save(directory, name)
