"""The probes' data, on the host: the inputs the sandbox feeds to the student's code, and what the
probes exported (safetensors and JSON only; never pickles). The probes themselves run in the
student's kernel: coursekit/in_sandbox/probes.py."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from coursekit.in_sandbox.protocol import INPUTS_FILE, PROBE_NAMES, Status

MAX_EXPORT_BYTES = 64 * 2**20


def make_inputs(seed: int) -> dict[str, torch.Tensor]:
    """Fresh random inputs for every grading run, so no answer can be prepared in advance."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def size(low, high):
        return int(torch.randint(low, high + 1, (1,), generator=g))

    n, n_in, n_hidden, n_out = size(4, 9), size(3, 8), size(3, 8), size(2, 6)
    train_n, train_d = 64, 5
    train_x = randn(train_n, train_d)
    return {
        "lin.x": randn(n, n_in), "lin.W": randn(n_in, n_out), "lin.b": randn(n_out), "lin.g": randn(n, n_out),
        "relu.x": randn(n, n_in), "relu.g": randn(n, n_in),
        "seq.x": randn(n, n_in), "seq.W1": randn(n_in, n_hidden), "seq.b1": randn(n_hidden),
        "seq.W2": randn(n_hidden, n_out), "seq.b2": randn(n_out), "seq.g": randn(n, n_out),
        "ls.z": randn(n, 10) * 3, "ls.large": randn(n, 10) * 1e4,
        "mse.pred": randn(n, 1) * 3, "mse.target": torch.randint(0, 10, (n,), generator=g).float(),
        "ce.z": randn(n, 10) * 2, "ce.y": torch.randint(0, 10, (n,), generator=g),
        "sgd.W": randn(n_in, n_out), "sgd.b": randn(n_out), "sgd.gW": randn(n_in, n_out), "sgd.gb": randn(n_out),
        "sgd.lr": torch.tensor(0.1 + 0.4 * float(torch.rand(1, generator=g))),
        "train.x": train_x, "train.y": train_x @ randn(train_d) + 0.1 * randn(train_n),
        "train.s": torch.zeros(train_d), "train.c": torch.zeros(1), "train.lr": torch.tensor(0.1),
        "train.epochs": torch.tensor(4), "train.batch_size": torch.tensor(16),
        "acc.z": randn(3 * n, 10), "acc.y": torch.randint(0, 10, (3 * n,), generator=g),
    }


def write_inputs(inputs: dict[str, torch.Tensor], directory: Path) -> None:
    save_file({k: v.contiguous() for k, v in inputs.items()}, directory / INPUTS_FILE)


def regular_file(path: Path, root: Path) -> bool:
    """True for a regular file inside root: never follow a link the student's code may have planted."""
    return path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root.resolve())


@dataclass
class ProbeOutput:
    """What one probe exported; `error` says why nothing (or not everything) came back."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    error: str | None = None


def read_outputs(directory: Path, run_status: dict[str, Status]) -> dict[str, ProbeOutput]:
    outputs = {}
    for name in PROBE_NAMES:
        tensors_path, meta_path = directory / f"{name}.safetensors", directory / f"{name}.json"
        status = run_status.get(name)
        if status is None or not status.ok:
            error = status.sentence() if status else "the probe did not run (the notebook did not finish)"
            outputs[name] = ProbeOutput(error=error)
            continue
        if not (regular_file(meta_path, directory) and regular_file(tensors_path, directory)):
            outputs[name] = ProbeOutput(error="the probe left no result")
            continue
        if max(meta_path.stat().st_size, tensors_path.stat().st_size) > MAX_EXPORT_BYTES:
            outputs[name] = ProbeOutput(error="the probe's export is implausibly large")
            continue
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(tensors_path)
        except Exception as error:  # corrupt or forged export: untrusted data
            outputs[name] = ProbeOutput(error=f"unreadable probe export ({type(error).__name__})")
            continue
        if not isinstance(meta, dict):
            outputs[name] = ProbeOutput(error="malformed probe description")
            continue
        outputs[name] = ProbeOutput(tensors, meta, error=meta.get("error"))
    return outputs
