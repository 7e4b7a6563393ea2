"""Trusted retraining (coursekit/grading/retrain.py) on hand-made training records: what confirms a
model, what is evidence against it (its points are lost) and what only a person can decide."""
from __future__ import annotations

import math

import pytest
import torch

from coursekit.grading.probe_data import ProbeOutput
from coursekit.grading.retrain import (
    NO_BACKWARD,
    RETRAIN_RTOL,
    REUSED,
    UNKNOWN,
    Checkpoint,
    RowIndex,
    TrainingRecord,
    difference,
    fingerprints,
    read_record,
    row_weights,
    verify,
)

G = torch.Generator().manual_seed(0)
X_TRAIN = torch.randint(0, 256, (120, 12), generator=G).float() / 255
X_TEST = torch.randint(0, 256, (40, 12), generator=G).float() / 255
Y = X_TRAIN[:, :3].argmax(1) + 3 * (X_TRAIN[:, 3] > 0.5)  # six classes the pixels decide
INDEX = RowIndex(X_TRAIN, X_TEST)
WEIGHTS = row_weights()


def untrained(params):
    """A stand-in for the loss bar: weights this large only come from training."""
    return "trained" if max(float(p.abs().max()) for p in params) > 3 else None


def start(hidden: int = 0):
    shapes = [(12, hidden), (hidden,), (hidden, 6), (6,)] if hidden else [(12, 6), (6,)]
    return [torch.randn(*shape, generator=G) * 0.1 for shape in shapes]


def student_step(params, x, y):
    """One SGD step as a student writes it (other float orderings than the grader's)."""
    layers = list(zip(params[0::2], params[1::2]))
    inputs, out = [], x
    for position, (W, b) in enumerate(layers):
        inputs.append(out)
        out = torch.addmm(b, out, W)
        if position < len(layers) - 1:
            out = torch.where(out > 0, out, torch.zeros_like(out))
    e = (out - out.max(1, keepdim=True).values).exp()
    grad = (e / e.sum(1, keepdim=True) - torch.eye(6)[y]) / len(y)
    grads = []
    for position in reversed(range(len(layers))):
        grads[:0] = [(grad.T @ inputs[position]).T, grad.mean(0) * len(grad)]
        if position:
            grad = (grad @ layers[position][0].T) * (inputs[position] > 0)
    return grads


def record_of(first, batches, lr=0.5, every=4, reused=()):
    """The record an honest training leaves: checkpoints every `every` updates and at the end."""
    params, checkpoints, rows, sizes, grads = [p.clone() for p in first], [Checkpoint(0, 5, first)], [], [], None
    for step, batch in enumerate(batches):
        if step in reused:
            sizes.append(REUSED)
        else:
            grads = student_step(params, X_TRAIN[batch], Y[batch])
            rows.append(fingerprints(X_TRAIN[batch], WEIGHTS))
            sizes.append(len(batch))
        for param, grad in zip(params, grads):
            param -= lr * grad
        if (step + 1) % every == 0 or step + 1 == len(batches):
            checkpoints.append(Checkpoint(step + 1, 6, [p.clone() for p in params]))
    return TrainingRecord(checkpoints, torch.full((len(batches),), lr, dtype=torch.float64),
                          torch.tensor(sizes, dtype=torch.int64), torch.cat(rows), False)


def epochs(count, size=16):
    g = torch.Generator().manual_seed(3)
    return [order[i:i + size] for _ in range(count) for order in [torch.randperm(120, generator=g)]
            for i in range(0, 120, size)]


def check(record, trusted=None):
    return verify(record, INDEX, X_TRAIN, Y, True, untrained, trusted)


def with_end(record, params):
    return TrainingRecord([*record.checkpoints[:-1], Checkpoint(record.checkpoints[-1].step, 7, params)],
                          record.lrs, record.sizes, record.rows, record.overflow)


@pytest.mark.parametrize("hidden", [0, 8])
def test_honest_training_is_confirmed_to_rounding(hidden):
    verdict = check(record_of(start(hidden), epochs(5)))
    assert verdict.outcome == "confirmed" and verdict.difference < 1e-6


def test_weights_put_in_place_of_the_trained_ones_are_evidence_with_the_numbers():
    record = record_of(start(), epochs(5))
    laundered = with_end(record, [p + 0.05 for p in record.checkpoints[-1].params])
    verdict = check(laundered)
    assert verdict.outcome == "evidence" and verdict.difference > 100 * RETRAIN_RTOL
    assert (
        "retraining it with the grader's own SGD on the batches your training used (cells 6 to 7) ends"
        in verdict.reason
    )


def test_a_difference_is_only_for_review_while_a_building_block_fails_its_checks():
    record = record_of(start(), epochs(5))
    verdict = check(with_end(record, [p + 0.05 for p in record.checkpoints[-1].params]), trusted="`Linear`")
    assert verdict.outcome == "inconclusive" and "your `Linear` does not pass all of its checks" in verdict.reason


def test_the_tolerance_sits_between_rounding_and_laundering():
    record = record_of(start(), epochs(2))
    end = record.checkpoints[-1].params
    scale = max(float(p.abs().max()) for p in end)
    assert check(with_end(record, [p + 0.5 * RETRAIN_RTOL * scale for p in end])).outcome == "confirmed"
    assert check(with_end(record, [p + 2 * RETRAIN_RTOL * scale for p in end])).outcome == "evidence"


def test_test_images_in_a_batch_are_evidence():
    record = record_of(start(), epochs(1))
    rows = record.rows.clone()
    rows[:3] = fingerprints(X_TEST[:3], WEIGHTS)
    verdict = check(TrainingRecord(record.checkpoints, record.lrs, record.sizes, rows, False))
    assert verdict.outcome == "evidence" and verdict.reason == "3 of the rows its training used are test images"


def test_rows_that_are_no_image_of_the_course_go_to_a_person():
    record = record_of(start(), epochs(1))
    rows = record.rows.clone()
    rows[0] += 1
    verdict = check(TrainingRecord(record.checkpoints, record.lrs, record.sizes, rows, False))
    assert verdict.outcome == "inconclusive" and "1 rows" in verdict.reason


@pytest.mark.parametrize("kind, outcome", [(NO_BACKWARD, "evidence"), (UNKNOWN, "inconclusive")])
def test_an_update_without_a_batch(kind, outcome):
    record = record_of(start(), epochs(1))
    sizes = record.sizes.clone()
    rows = record.rows[sizes[0]:]
    sizes[0] = kind
    assert check(TrainingRecord(record.checkpoints, record.lrs, sizes, rows, False)).outcome == outcome


def test_an_update_that_repeats_the_last_gradients_is_retrained_as_such():
    assert check(record_of(start(), epochs(2), reused={3, 9})).outcome == "confirmed"


def test_training_that_began_from_trained_weights_is_evidence():
    verdict = check(record_of([p * 100 for p in start()], epochs(1)))
    assert verdict.outcome == "evidence" and verdict.reason == "when its training began (cell 5) trained"


def test_a_restart_between_two_calls_must_be_an_untrained_model():
    first = record_of(start(), epochs(1))
    again = record_of(start(), epochs(1))
    for restart, outcome in (([p * 100 for p in start()], "evidence"), (again.checkpoints[0].params, "confirmed")):
        second = record_of(restart, epochs(1))
        shift = len(first.lrs)
        joined = TrainingRecord(
            first.checkpoints + [Checkpoint(c.step + shift, c.cell, c.params) for c in second.checkpoints],
            torch.cat([first.lrs, second.lrs]),
            torch.cat([first.sizes, second.sizes]),
            torch.cat([first.rows, second.rows]),
            False,
        )
        assert check(joined).outcome == outcome


def test_an_earlier_state_put_back_is_early_stopping_not_laundering():
    first = start()
    record = record_of(first, epochs(2), every=100)
    best = record_of(first, epochs(2)[:5], every=100)  # the same start and batches, stopped after 5 updates
    assert check(TrainingRecord([record.checkpoints[0], Checkpoint(len(record.lrs), 6, best.checkpoints[-1].params)],
                                record.lrs, record.sizes, record.rows, False)).outcome == "confirmed"


def test_an_incomplete_record_goes_to_a_person():
    record = record_of(start(), epochs(1))
    verdict = check(TrainingRecord(record.checkpoints, record.lrs, record.sizes, record.rows, True))
    assert verdict.outcome == "inconclusive"


def exported(record: TrainingRecord, name="logistic_model") -> ProbeOutput:
    tensors = {f"{name}.lr": record.lrs, f"{name}.batch_sizes": record.sizes, f"{name}.rows": record.rows}
    for index, checkpoint in enumerate(record.checkpoints):
        tensors.update({f"{name}.checkpoint.{index}.{order}": p for order, p in enumerate(checkpoint.params)})
    meta = {"trained": True, "overflow": False,
            "checkpoints": [{"step": c.step, "cell": c.cell} for c in record.checkpoints]}
    return ProbeOutput(tensors, {name: meta})


def test_a_record_reads_back_from_the_probe_export():
    record = record_of(start(), epochs(2))
    read = read_record(exported(record), "logistic_model", [(12, 6), (6,)])
    assert isinstance(read, TrainingRecord) and check(read).outcome == "confirmed"
    assert [c.step for c in read.checkpoints] == [c.step for c in record.checkpoints]


@pytest.mark.parametrize("forge, why", [
    (lambda out: out.meta["logistic_model"].update(checkpoints="many"), "has no checkpoints"),
    (lambda out: out.tensors.pop("logistic_model.rows"), "is incomplete"),
    (lambda out: out.tensors.update({"logistic_model.batch_sizes": torch.full((16,), 99)}), "do not add up"),
    (lambda out: out.tensors.update({"logistic_model.checkpoint.1.0": torch.zeros(3, 3)}), "other shapes"),
    (lambda out: out.meta["logistic_model"]["checkpoints"][1].update(step=1000), "out of order"),
    (lambda out: out.meta["logistic_model"]["checkpoints"].pop(), "does not cover"),
])
def test_a_malformed_record_says_why(forge, why):
    output = exported(record_of(start(), epochs(2)))
    forge(output)
    assert why in read_record(output, "logistic_model", [(12, 6), (6,)])


def test_difference_is_relative_and_nan_safe():
    assert difference([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 4.0])]) == 0.5
    assert difference([torch.tensor([math.nan, 1.0])], [torch.tensor([math.nan, 1.0])]) == 0.0
    assert difference([torch.tensor([math.nan])], [torch.tensor([1.0])]) == math.inf


def test_images_that_share_a_fingerprint_are_no_known_row():
    """A wide row's fingerprint takes every k-th value: two images that differ only elsewhere share it,
    and a batch with either goes to a person (never to the wrong image's retraining, which would differ)."""
    wide = torch.rand(6, 28 * 28, generator=G)
    wide[1] = wide[0]
    wide[1, 1] += 0.5  # not a column the fingerprint takes
    wide[3] = wide[2]  # the same image twice: either row is right
    index = RowIndex(wide[:4], wide[4:])
    values = fingerprints(wide, WEIGHTS)
    assert values[0] == values[1] and index.ambiguous == {int(values[0])}
    rows, tests, unknown = index.locate(values)
    assert rows[:2].tolist() == [-1, -1] and rows[2] in (2, 3) and rows[3] in (2, 3)
    assert (tests, unknown) == (2, 2)


@pytest.mark.slow
def test_fingerprints_keep_all_of_mnist_apart(idx_dir):
    """Every k-th pixel of a row is enough: no two of MNIST's 70,000 images share a fingerprint, so no batch
    of the course's images goes to review for it."""
    from coursekit.data import read_idx

    train, test = (torch.from_numpy(read_idx(idx_dir / f"{split}-images.idx3-ubyte")).float().div(255).reshape(-1, 784)
                   for split in ("train", "t10k"))
    index = RowIndex(train, test)
    assert index.ambiguous == set() and len(index.train) == len(torch.unique(train, dim=0))
