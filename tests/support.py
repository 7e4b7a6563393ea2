"""Shared test helpers: a reference solution, trained and probed without a sandbox.

The reference solution (plain torch, written here) is exec'd as `__main__`, like a notebook's cells,
with the real training recorder of coursekit/in_sandbox/training_record.py following its `train` and
`sgd_step` (the guard itself is not installed: it would patch torch for the whole test process). It
trains the three graded models on a made-up subset, then the real probes (in_sandbox/probes.py) export
what the grader reads, through safetensors and JSON as in a grading run."""
from __future__ import annotations

import functools
import importlib.util
import json
import re
import textwrap
import types
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load, save

from conftest import ROOT
from coursekit.config import Floors
from coursekit.grading.checks import Context
from coursekit.grading.probe_data import PROBE_NAMES, ProbeOutput, make_inputs
from coursekit.grading.retrain import row_weights
from coursekit.grading.scan import RULES, SUSPICIOUS, UNPARSABLE, VIOLATION, Finding, ScanPolicy, scan_cells
from coursekit.in_sandbox.protocol import FINGERPRINT_COLUMNS


def load_module(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANDBOX_PROBE = load_module("sandbox_probe_under_test", ROOT / "coursekit" / "in_sandbox" / "probes.py")

# What a student's notebook defines: run as `__main__`, like the notebook's own cells.
REFERENCE = '''
import torch


class Linear:
    def __init__(self, n_in, n_out):
        self.params = {"W": torch.randn(n_in, n_out) * (2 / n_in) ** 0.5, "b": torch.zeros(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads = {"W": self.x.T @ grad_out, "b": grad_out.sum(0)}
        return grad_out @ self.params["W"].T


class ReLU:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.mask = x > 0
        return torch.where(self.mask, x, torch.zeros_like(x))

    def backward(self, grad_out):
        return torch.where(self.mask, grad_out, torch.zeros_like(grad_out))


class Sequential:
    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out


def log_softmax(logits):
    shifted = logits - logits.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


class MSELoss:
    def forward(self, pred, target):
        self.shape, self.diff = pred.shape, pred.reshape(-1) - target
        return (self.diff ** 2).mean()

    def backward(self):
        return (2 * self.diff / self.diff.numel()).reshape(self.shape)


class CrossEntropyLoss:
    def forward(self, logits, target):
        self.logits, self.target = logits, target
        return -log_softmax(logits)[torch.arange(len(target)), target].mean()

    def backward(self):
        n, c = self.logits.shape
        return (log_softmax(self.logits).exp() - torch.eye(c)[self.target]) / n


def sgd_step(model, lr):
    for layer in model.layers:
        for key in layer.params:
            layer.params[key] -= lr * layer.grads[key]


def train(model, loss_fn, x, y, lr, epochs, batch_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            model.backward(loss_fn.backward())
            sgd_step(model, lr)
            total += float(loss) * len(batch)
        losses.append(total / len(x))
    return losses


def accuracy(logits, y):
    return float((logits.argmax(dim=1) == y).float().mean())
'''

# The grader's subset, made up: the label is in the pixels (one-hot in the first ten, on a noisy
# background in [0, 1] like MNIST's), 20 training and 10 test images per digit.
G = torch.Generator().manual_seed(1234)


def images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(count) % 10
    noise = torch.randint(0, 64, (count, 784), generator=G).float() / 255
    return torch.maximum(noise, torch.cat([torch.eye(10)[y], torch.zeros(count, 774)], dim=1)), y


X, Y = images(200)
X_TEST, Y_TEST = images(100)

TRAINING = '''
torch.manual_seed(0)
regression_model = Sequential(Linear(784, 1))
regression_losses = train(regression_model, MSELoss(), x, y.float(), lr=0.01, epochs=20, batch_size=20)
logistic_model = Sequential(Linear(784, 10))
logistic_losses = train(logistic_model, CrossEntropyLoss(), x, y, lr=0.05, epochs=2, batch_size=20)
mlp_model = Sequential(Linear(784, 30), ReLU(), Linear(30, 10))
mlp_losses = train(mlp_model, CrossEntropyLoss(), x, y, lr=0.2, epochs=10, batch_size=10)
'''


class Shell:
    """What the training recorder asks of IPython."""

    def __init__(self, namespace: dict):
        self.compile = types.SimpleNamespace(_filename_map={})
        self.execution_count, self.user_ns, self.ast_transformers = 1, namespace, []


def student_namespace() -> dict:
    """The reference solution, its three models trained under the training recorder."""
    ns: dict = {"__name__": "__main__"}
    recorder = load_module("coursekit_record_under_test", ROOT / "coursekit" / "in_sandbox" / "training_record.py")
    recorder.SHELL[:] = [Shell(ns)]
    recorder.ROW_WEIGHTS[:], recorder.COLUMNS[:] = [row_weights()], [FINGERPRINT_COLUMNS]
    exec(compile(REFERENCE, "<reference solution>", "exec"), ns)
    recorder.follow_definitions(ns)
    ns["__coursekit_record"] = recorder
    with torch.inference_mode():
        exec(compile(TRAINING, "<reference training>", "exec"), {**ns, "x": X, "y": Y}, ns)
    return ns


def exported(rec) -> ProbeOutput:
    """Through the same formats as a real export: safetensors and JSON."""
    meta = json.loads(json.dumps(rec.meta))
    return ProbeOutput(load(save(rec.tensors)), meta, error=meta.get("error"))


@functools.cache
def perfect_outputs(seed: int) -> dict[str, ProbeOutput]:
    torch.manual_seed(seed)  # the reference Linear's initialisation
    inputs, ns, outputs = make_inputs(seed), student_namespace(), {}
    for name in PROBE_NAMES:
        rec = SANDBOX_PROBE.Recorder()
        with torch.inference_mode():
            SANDBOX_PROBE.PROBES[name](ns, inputs, rec)
        outputs[name] = exported(rec)
    return outputs


def model_metrics(outputs: dict[str, ProbeOutput]) -> dict[str, float]:
    """The models' test MSE and accuracies, as the grader recomputes them."""
    tensors = outputs["models"].tensors

    def forward(name, count):
        x = X_TEST
        for position in range(count):
            if f"{name}.{position}.params.W" in tensors:
                x = x @ tensors[f"{name}.{position}.params.W"] + tensors[f"{name}.{position}.params.b"]
            else:
                x = x.clamp(min=0)
        return x
    return {"regression": float((forward("regression_model", 1).reshape(-1) - Y_TEST).pow(2).mean()),
            "logistic": float((forward("logistic_model", 1).argmax(1) == Y_TEST).float().mean()),
            "mlp": float((forward("mlp_model", 3).argmax(1) == Y_TEST).float().mean())}


def floors_for(outputs: dict[str, ProbeOutput]) -> Floors:
    """Floors the trained models clear with a small margin."""
    metrics = model_metrics(outputs)
    return Floors(regression_mse=metrics["regression"] + 0.5, logistic_accuracy=metrics["logistic"] - 0.05,
                  mlp_accuracy=metrics["mlp"] - 0.05)


def context(seed: int, outputs: dict[str, ProbeOutput] | None = None) -> Context:
    import copy

    outputs = outputs if outputs is not None else copy.deepcopy(perfect_outputs(seed))
    return Context(outputs, make_inputs(seed), X_TEST, Y_TEST, X, Y, floors_for(perfect_outputs(seed)))


def grade_catalogue(tmp_path_factory, cases: dict, files: dict | None = None, build_notebook=None) -> tuple:
    """Grade every case (student name -> edits of the complete solution) in one parallel batch in the
    real sandbox, on a copy of the course; (course, {student: Submission}). `files`: student -> {name:
    () -> bytes} of other files; `build_notebook(course, edits)` makes a case's notebook (examples.build)."""
    import shutil

    import nbformat

    from coursekit.config import Course
    from coursekit.examples import build
    from coursekit.grading.batch import grade_class
    from coursekit.grading.pipeline import tree_digest

    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "course.toml", root / "course.toml")
    course = Course(root)
    for name, edits in cases.items():
        folder = course.submission(name)
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write((build_notebook or build)(course, edits), folder / course.notebook_name)
        for filename, content in (files or {}).get(name, {}).items():
            (folder / filename).write_bytes(content())
    before = tree_digest(root / "submitted")
    results = grade_class(course, list(cases), jobs=2, require_sandbox=True, progress=False)
    assert tree_digest(root / "submitted") == before, "grading must never modify a submission"
    return course, {r.student: r for r in results}


# The static scanner: one call per notebook, cells numbered from 0, the course's preamble in scope.
SCAN_PREAMBLE = "from fastai.vision.all import *\nimport torch\n"
V, S, U = VIOLATION, SUSPICIOUS, UNPARSABLE
RULES_AND_SEVERITIES = set(RULES.items())


def scan(*sources: str, policy: ScanPolicy = ScanPolicy(), preamble: str = SCAN_PREAMBLE) -> list[Finding]:
    return scan_cells(list(enumerate(sources)), policy, preamble)


def triples(findings: list[Finding]) -> list[tuple[str, str, int]]:
    return [(f.severity, f.rule, f.line) for f in findings]


def cell(text: str) -> str:
    """A cell's source written indented in a test."""
    return textwrap.dedent(text).lstrip("\n")


def by_line(found: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """(severity, rule, line) triples in line order, whatever order the rules were found in."""
    return sorted(found, key=lambda t: (t[2], t[1]))


# The assignment's autograded points (the attack and honest catalogues' full score).
FULL = 80


# What the graded backward passes must not give away (tests/test_no_answers_given.py).
# graded backward -> its key expressions, in code and in LaTeX, as the previous editions wrote them
GRADED_BACKWARDS = {
    "Linear": [
        r"\.T\s*@\s*(grad_out|G|g|upstream)\b",  # dW = x.T @ grad_out
        r"\b(grad_out|G|upstream)\s*@\s*[\w.\[\]\"']*\.T\b",  # dx = grad_out @ W.T
        r"\b(grad_out|G)\.sum\(\s*(dim\s*=\s*)?0\s*\)",  # db = grad_out.sum(dim=0)
        r"\\sum_n\s*x_\{ni\}",  # the same, in index notation
        r"x\^\\top\s*g",
    ],  # one example's outer product
    "ReLU": [
        r"\b(grad_out|G|g)\s*\*\s*\(?\s*(self\.)?(mask|x\s*>\s*0)",  # grad_out * mask
        r"where\(\s*\w+\s*>\s*0\s*,\s*(grad_out|G|g)\b",
        r"g_\{nk\}\s*\\?,?\s*\[x_\{nk\}\s*>\s*0\]",
        r"cache the mask",
    ],
    "MSELoss": [r"2\s*\*?\s*\(?\s*(d_i|d|diff|self\.diff|pred\w*\s*-\s*t\w*|\\text\{pred\}_i\s*-\s*t_i)\s*\)?\s*/"],
    "CrossEntropyLoss": [
        r"softmax\S*\s*-\s*\\?(operatorname\{)?one-?hot",  # (softmax - onehot) / N
        r"p_\{?i\s*,?\s*k\}?\s*-\s*\[k\s*=\s*y_i\]",  # (p_ik - [k = y_i]) / N
        r"\]\s*-=\s*1\b",  # grad[rows, target] -= 1
        r"subtract 1 at",
        r"\(p\s*-\s*1\)\s*/\s*N",
    ],
}


def stated_backwards(text: str) -> list[tuple[str, str]]:
    """(graded layer, matched text) for every key expression of a graded backward found in text."""
    return [
        (layer, match.group(0))
        for layer, patterns in GRADED_BACKWARDS.items()
        for pattern in patterns
        for match in re.finditer(pattern, text, flags=re.IGNORECASE)
    ]


# The platforms' autograders (tests/test_platform_*.py).
RUNNER_ENV = {  # what Classroom 50's runner sets, and the Actions variables it passes through
    "CLASSROOM": "ml-2026", "ASSIGNMENT": "classifier-from-scratch", "ASSIGNMENT_TYPE": "individual",
    "OWNER": "alice-s", "USERNAME": "alice-s", "SUBMISSION_TAG": "submit/2026-11-23T10-00-00Z-abc1234",
    "COMMIT_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/commit/abc1234",
    "RELEASE_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/releases/tag/submit%2Fx",
    "REVIEW_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/compare/base...abc1234",
    "GITHUB_REPOSITORY": "ml-org/ml-2026-classifier-from-scratch-alice-s", "GITHUB_REPOSITORY_OWNER": "ml-org",
    "GITHUB_ACTOR": "alice-s", "GITHUB_ACTOR_ID": "4242", "GITHUB_SHA": "abc1234", "GITHUB_SERVER_URL": "https://github.com",
}
IDENTITY = {"classroom": "CLASSROOM", "assignment": "ASSIGNMENT", "assignment_type": "ASSIGNMENT_TYPE",
            "owner": "OWNER", "submission": "SUBMISSION_TAG", "commit": "COMMIT_URL", "release": "RELEASE_URL",
            "review": "REVIEW_URL"}


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(dest)
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zipped.infolist()}
    for name, mode in modes.items():  # extractall drops the modes
        (dest / name).chmod(mode)
    return dest


def fake_command(folder: Path, name: str, script: str) -> None:
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


def read_results(root: Path) -> dict:
    report = json.loads((root / "results" / "results.json").read_text())
    assert isinstance(report["score"], (int, float)) and isinstance(report["output"], str)
    assert all(isinstance(test, dict) for test in report["tests"])
    return report
