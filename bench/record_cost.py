"""Cost of the training record per step: the reference solution's `train` on the logistic model (batches of
32) and on the two-layer model (batches of 16), as the notebook trains them, in this process, plain and with
`coursekit/in_sandbox/training_record.py` and `instrument.py` installed as the kernel installs them. One
epoch at a time, alternating, in this thread's CPU time; the fastest of --runs and the median of the pairs
(on a shared machine the others measure its load). Without a kernel, so it isolates the per-step cost from
everything else `bench/instrument_cost.py` measures; `--profile` prints where the instrumented run spends its time.

    .venv/bin/python bench/record_cost.py [--runs 15] [--profile]
"""
from __future__ import annotations

import argparse
import ast
import builtins
import cProfile
import math
import pstats
import statistics
import sys
import time
import types
from pathlib import Path

import nbformat
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from coursekit.grading.rubric import nbgrader_meta  # noqa: E402
from coursekit.in_sandbox.protocol import FINGERPRINT_BITS, FINGERPRINT_COLUMNS, FINGERPRINT_SEED, FINGERPRINT_WIDTH  # noqa: E402

SOURCE = ROOT / "source" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
CELLS = ("linear", "relu", "sequential", "log_softmax", "cross_entropy_loss", "sgd_step", "train")
CELL_FILE = "/tmp/ipykernel_0/1.py"  # what the instrumentation takes for a notebook cell's code
# name -> (its layers, learning rate, batch size), as the notebook trains them
MODELS = {"logistic": ("Linear(784, 10)", 0.05, 32), "two-layer": ("Linear(784, 30), ReLU(), Linear(30, 10)", 0.2, 16)}


class Shell:
    """What the instrumentation asks of IPython."""

    def __init__(self):
        self.compile = types.SimpleNamespace(_filename_map={CELL_FILE: 1})
        self.execution_count = 1
        self.user_ns = {"__name__": "__main__", "torch": torch, "math": math, "np": np}
        self.ast_transformers: list = []

    def run(self, code: str) -> None:
        tree = ast.parse(code)
        for transformer in self.ast_transformers:
            tree = transformer.visit(tree)
        exec(compile(tree, CELL_FILE, "exec"), self.user_ns)


def solution_code() -> str:
    notebook = nbformat.read(SOURCE, as_version=4)
    cells = {nbgrader_meta(cell).get("grade_id"): cell.source for cell in notebook.cells}
    return "\n".join(cells[grade_id] for grade_id in CELLS)


def kernel_module(name: str, filename: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile((ROOT / "coursekit/in_sandbox" / filename).read_text(), name, "exec"), module.__dict__)
    return module


def instrumented_shell() -> Shell:
    shell = Shell()
    builtins.get_ipython = lambda: shell  # type: ignore[attr-defined]
    record, guard = kernel_module("coursekit_record", "training_record.py"), kernel_module("coursekit_guard",
                                                                                          "instrument.py")
    record.install(shell, FINGERPRINT_SEED, FINGERPRINT_BITS, FINGERPRINT_WIDTH, FINGERPRINT_COLUMNS)
    guard.install(True, record)
    shell.user_ns.update(__coursekit_record=record, __coursekit_guard=guard)
    return shell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    data = {"x": torch.rand(5000, 784), "y": torch.randint(0, 10, (5000,))}
    for name, (layers, lr, batch_size) in MODELS.items():
        shells = {"plain": Shell(), "instrumented": instrumented_shell()}
        for shell in shells.values():
            shell.run(solution_code())
            shell.user_ns.update(data)
            shell.run(f"torch.manual_seed(0)\nmodel, loss_fn = Sequential({layers}), CrossEntropyLoss()")
        epoch = f"train(model, loss_fn, x, y, lr={lr}, epochs=1, batch_size={batch_size})"
        seconds = {kind: [] for kind in shells}  # type: dict[str, list[float]]
        for run in range(args.runs):
            for kind in sorted(shells, reverse=run % 2 == 1):
                start = time.thread_time()
                shells[kind].run(epoch)
                seconds[kind].append(time.thread_time() - start)
        steps = math.ceil(5000 / batch_size)
        plain, recorded = seconds["plain"], seconds["instrumented"]
        paired = statistics.median(b - a for a, b in zip(plain, recorded))
        fastest = min(recorded) - min(plain)
        print(f"{name}: {1e6 * min(plain) / steps:.0f} us per step; recorded, {1e6 * fastest / steps:.0f} us more "
              f"(fastest of {args.runs}), {1e6 * paired / steps:.0f} us more (median of the pairs)")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(shells["instrumented"].run, epoch)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
