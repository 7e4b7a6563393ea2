"""Trusted retraining: the grader's own minibatch SGD on its own copy of the training images, replayed
from a graded model's training record. Nothing of the student's runs here.

The record comes from the student's kernel (in_sandbox/instrument.py): checkpoints of the model's
parameters (when training began, around every `train` call, every few hundred updates, at the end)
and, between checkpoints, each update's learning rate and its batch, as one fingerprint per row. It is
untrusted data: `verify` retrains every stretch between two checkpoints from the first one and
requires the second, so a record can only be believed if honest SGD on training images produces it.

`verify` returns a Verdict. Evidence (the model's points are lost): training began from, or was
reset to, parameters that already fit the training images; a batch held test images; an update
used gradients that no backward pass of the model computed; retraining does not reach the next
checkpoint while the student's building blocks pass all their checks. Inconclusive (a person
looks, the points stand): the record cannot be read or is incomplete, a batch is not made of
training rows, or retraining differs while a building block fails a check (its bug may explain it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, cast

import torch

from coursekit.grading.probe_data import ProbeOutput
from coursekit.in_sandbox.protocol import FINGERPRINT_BITS, FINGERPRINT_COLUMNS, FINGERPRINT_SEED, FINGERPRINT_WIDTH

# Honest training and its retraining differ by float rounding only: at most 2e-6 of the largest
# parameter over the three reference models (measured in bench/retrain_margin.py); a laundered
# model differs by more than 1e-2. RETRAIN_RTOL sits between them.
RETRAIN_RTOL = 1e-4
REUSED, NO_BACKWARD, UNKNOWN = -1, -2, -3  # batch sizes that are not a batch (instrument.py)

Params = list[torch.Tensor]


def row_weights() -> torch.Tensor:
    generator = torch.Generator().manual_seed(FINGERPRINT_SEED)
    return torch.randint(0, 2 ** FINGERPRINT_BITS, (FINGERPRINT_WIDTH,), generator=generator).double()


def fingerprints(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One int64 per row of x, from its float32 bits, of a wide row every k-th (the kernel computes the
    same, exactly: see FINGERPRINT_BITS and FINGERPRINT_COLUMNS)."""
    rows = x.detach().reshape(len(x), -1).float().contiguous()
    stride = max(1, rows.shape[1] // FINGERPRINT_COLUMNS)
    bits = rows.view(torch.int32)[:, ::stride]
    return torch.mv(bits.double(), weights[:bits.shape[1]]).long()


def ambiguous(rows: torch.Tensor, values: list[int]) -> set[int]:
    """The fingerprints that rows with different values share (a fingerprint takes part of a wide row)."""
    first: dict[int, int] = {}
    shared = set()
    for row, value in enumerate(values):
        seen = first.setdefault(value, row)
        if seen != row and not torch.equal(rows[seen], rows[row]):
            shared.add(value)
    return shared


class RowIndex:
    """Which training image (or test image) a fingerprint is. A fingerprint that distinct images share
    is neither: its batch's rows are unknown, for a person to review."""

    def __init__(self, x_train: torch.Tensor, x_test: torch.Tensor):
        images = torch.cat([x_train.reshape(len(x_train), -1).float(), x_test.reshape(len(x_test), -1).float()])
        values = fingerprints(images, row_weights()).tolist()
        self.ambiguous = ambiguous(images, values)
        train, test = values[:len(x_train)], values[len(x_train):]
        self.train = {value: row for row, value in enumerate(train) if value not in self.ambiguous}
        self.test = set(test) - set(train) - self.ambiguous

    def locate(self, values: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(training row of each value, -1 where none; how many are test images; how many unknown)."""
        rows = [self.train.get(value, -1) for value in values.tolist()]
        missing = [value for value, row in zip(values.tolist(), rows) if row < 0]
        tests = sum(value in self.test for value in missing)
        return torch.tensor(rows, dtype=torch.int64), tests, len(missing) - tests


@dataclass(frozen=True)
class Checkpoint:
    step: int          # updates before it
    cell: int | None   # the notebook cell that was running
    params: Params


@dataclass(frozen=True)
class TrainingRecord:
    checkpoints: list[Checkpoint]
    lrs: torch.Tensor    # float64, one per update
    sizes: torch.Tensor  # int64, one per update: the batch's rows, or REUSED, NO_BACKWARD, UNKNOWN
    rows: torch.Tensor   # int64 fingerprints of every batch's rows, in order
    overflow: bool


def read_record(output: ProbeOutput, name: str, shapes: list[tuple[int, ...]]) -> TrainingRecord | str:
    """The training record of `name` from the provenance probe's export, or why it cannot be used."""
    meta = output.meta.get(name)
    meta = meta if isinstance(meta, dict) else {}
    listed = meta.get("checkpoints")
    if not isinstance(listed, list) or not listed or not all(isinstance(c, dict) for c in listed):
        return "its training record has no checkpoints"
    lrs, sizes, rows = (output.tensors.get(f"{name}.{key}") for key in ("lr", "batch_sizes", "rows"))
    if lrs is None or sizes is None or rows is None or lrs.shape != sizes.shape or lrs.dim() != 1:
        return "its training record is incomplete"
    if sizes.dtype != torch.int64 or rows.dtype != torch.int64 or int(sizes.clamp(min=0).sum()) != len(rows):
        return "its training record's batches do not add up"
    checkpoints: list[Checkpoint] = []
    for index, entry in enumerate(listed):
        params = [output.tensors.get(f"{name}.checkpoint.{index}.{order}") for order in range(len(shapes))]
        step, cell = entry.get("step"), entry.get("cell")
        if any(p is None or tuple(p.shape) != shape for p, shape in zip(params, shapes)):
            return f"checkpoint {index} of its training record is missing or has other shapes"
        if type(step) is not int or not (checkpoints[-1].step if checkpoints else 0) <= step <= len(lrs):
            return f"checkpoint {index} of its training record is out of order"
        # every parameter is there with its shape (checked above)
        checkpoints.append(Checkpoint(step, cell if type(cell) is int else None, cast(Params, params)))
    if checkpoints[0].step != 0 or checkpoints[-1].step != len(lrs):
        return "its training record does not cover all of its updates"
    return TrainingRecord(checkpoints, lrs.double(), sizes, rows, meta.get("overflow") is True)


@dataclass(frozen=True)
class Verdict:
    outcome: str                 # "confirmed" | "evidence" | "inconclusive"
    reason: str = ""             # what was found, for the student and the reviewer
    difference: float | None = None  # largest relative difference between retraining and the record


def gradients(params: Params, x: torch.Tensor, y: torch.Tensor, classifier: bool) -> Params:
    """The loss's gradients for Linear layers (W, b pairs) with a ReLU between consecutive ones."""
    pairs = list(zip(params[0::2], params[1::2]))
    activations = [x]
    for position, (W, b) in enumerate(pairs):
        out = activations[-1] @ W + b
        activations.append(out.clamp(min=0) if position < len(pairs) - 1 else out)
    grad = output_gradient(activations.pop(), y, classifier)
    found: Params = []
    for position in reversed(range(len(pairs))):
        inputs = activations[position]
        found[:0] = [inputs.T @ grad, grad.sum(0)]
        if position:
            grad = (grad @ pairs[position][0].T) * (inputs > 0)
    return found


def output_gradient(z: torch.Tensor, y: torch.Tensor, classifier: bool) -> torch.Tensor:
    """Mean cross-entropy's gradient with respect to the logits, or mean squared error's."""
    if classifier:
        probabilities = (z - z.max(dim=1, keepdim=True).values).exp()
        probabilities /= probabilities.sum(dim=1, keepdim=True)
        probabilities[torch.arange(len(y)), y] -= 1
        return probabilities / len(y)
    difference = z.reshape(-1) - y
    return (2 * difference / len(y)).reshape(z.shape)


@dataclass
class Replay:
    """The training images and the record's batches as the grader retrains them."""

    x: torch.Tensor
    y: torch.Tensor
    classifier: bool
    record: TrainingRecord
    batches: list[torch.Tensor | int]  # training rows, or REUSED / NO_BACKWARD / UNKNOWN
    last: Params | None = None          # the gradients of the last update, for REUSED

    def states(self, params: Params, first: int, end: int) -> Iterator[Params]:
        """Update params in place by the record's steps first..end-1; yield them after each."""
        for step in range(first, end):
            batch, lr = self.batches[step], float(self.record.lrs[step])
            if isinstance(batch, torch.Tensor):
                self.last = gradients(params, self.x[batch], self.y[batch], self.classifier)
            for param, grad in zip(params, self.last or []):
                param -= lr * grad
            yield params


def difference(first: Params, second: Params) -> float:
    """The largest difference between two parameter lists, relative to the second's largest finite
    parameter (nan where both are nan counts as equal; anywhere else it is an infinite difference)."""
    worst, scale = 0.0, 0.0
    for a, b in zip(first, second):
        a, b = a.double(), b.double()
        gap = torch.where(torch.isnan(a) & torch.isnan(b), 0.0, (a - b).abs())
        if torch.isnan(gap).any():
            return math.inf
        finite = b[torch.isfinite(b)].abs()
        worst = max(worst, float(gap.max()) if gap.numel() else 0.0)
        scale = max(scale, float(finite.max()) if finite.numel() else 0.0)
    return worst / max(scale, 1e-12) if math.isfinite(worst) else math.inf


def split_batches(record: TrainingRecord, rows: torch.Tensor) -> list[torch.Tensor | int]:
    found: list[torch.Tensor | int] = []
    offset = 0
    for size in record.sizes.tolist():
        if size >= 0:
            found.append(rows[offset:offset + size])
            offset += size
        else:
            found.append(size)
    return found


def verify(record: TrainingRecord, index: RowIndex, x: torch.Tensor, y: torch.Tensor, classifier: bool,
           already_trained: Callable[[Params], str | None], trusted: str | None) -> Verdict:
    """Is the record what honest SGD on training images makes, from an untrained start? `trusted` is
    None when the student's building blocks pass all their checks, else which one does not."""
    rows, tests, unknown = index.locate(record.rows)
    if tests:
        return Verdict("evidence", f"{tests} of the rows its training used are test images")
    began = already_trained(record.checkpoints[0].params)
    if began:
        return Verdict("evidence", f"when its training began (cell {record.checkpoints[0].cell}) {began}")
    batches = split_batches(record, rows)
    kinds = [batch for batch in batches if isinstance(batch, int)]
    if NO_BACKWARD in kinds:
        step = next(step for step, batch in enumerate(batches) if isinstance(batch, int) and batch == NO_BACKWARD)
        return Verdict("evidence", f"an update (cell {cell_of_step(record, step)}) used gradients that no backward "
                                   "pass of the model computed")
    if record.overflow or UNKNOWN in kinds or unknown:
        return Verdict("inconclusive", "its training record is incomplete (updates or batch rows the grader "
                                       f"cannot tie to training images: {unknown} rows)")
    return retrain_stretches(Replay(x, y, classifier, record, batches), already_trained, trusted)


def cell_of_step(record: TrainingRecord, step: int) -> int | None:
    """The cell of the first checkpoint after an update (the cell that was training)."""
    return next((c.cell for c in record.checkpoints if c.step > step), record.checkpoints[-1].cell)


def retrain_stretches(replay: Replay, already_trained: Callable[[Params], str | None],
                      trusted: str | None) -> Verdict:
    """Retrain each stretch between two checkpoints from the first; it must reach the second."""
    worst, checkpoints = 0.0, replay.record.checkpoints
    for start, end in zip(checkpoints, checkpoints[1:]):
        if start.step == end.step:
            reset = None if difference(start.params, end.params) == 0 else already_trained(end.params)
            if reset:
                return Verdict("evidence", f"its parameters were replaced (cell {end.cell}) by ones that no update "
                                           f"of yours produced: {reset}")
            continue
        gap = stretch_gap(replay, start, end)
        if gap > RETRAIN_RTOL:
            return mismatch(start, end, gap, trusted)
        worst = max(worst, gap)
    return Verdict("confirmed", difference=worst)


def stretch_gap(replay: Replay, start: Checkpoint, end: Checkpoint) -> float:
    """How far retraining from `start` ends from `end`; 0 if it passes through `end` on the way
    (an earlier state put back, as early stopping does)."""
    last, params = replay.last, [p.clone() for p in start.params]
    for _ in replay.states(params, start.step, end.step):
        pass
    gap = difference(params, end.params)
    if gap <= RETRAIN_RTOL or difference(start.params, end.params) <= RETRAIN_RTOL:
        return min(gap, difference(start.params, end.params))
    replay.last, params = last, [p.clone() for p in start.params]
    passed = any(difference(state, end.params) <= RETRAIN_RTOL for state in replay.states(params, start.step, end.step))
    return 0.0 if passed else gap


def mismatch(start: Checkpoint, end: Checkpoint, gap: float, trusted: str | None) -> Verdict:
    where = f"cell {end.cell}" if start.cell == end.cell else f"cells {start.cell} to {end.cell}"
    found = (f"retraining it with the grader's own SGD on the batches your training used ({where}) "
             f"ends {gap:.2g} (relative to its largest parameter) away from the parameters your training "
             f"reported, where honest training differs by less than {RETRAIN_RTOL:g}")
    if trusted:
        return Verdict("inconclusive", f"{found}; your {trusted} does not pass all of its checks, which may explain it",
                       gap)
    return Verdict("evidence", found, gap)
