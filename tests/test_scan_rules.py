"""The static scanner's checks and policy table: what is forbidden or reviewed, what is not, and the checks'
contract (they return findings naming their check; the registry's order changes nothing)."""
from __future__ import annotations

import dataclasses
import random

import nbformat
import pytest

from conftest import ROOT
from coursekit.grading.scan import RULES, ScanPolicy, rules, scan_cells
from coursekit.grading.scan.findings import Hit
from scan_cases import CLEAN, DYNAMIC, FORBIDDEN, OWN_BACKWARD, OWN_LAYER, STUDENT_SOLUTION, SUSPICIOUS_USES
from support import S, U, V, by_line, cell, scan, triples

CASES = FORBIDDEN + SUSPICIOUS_USES


@pytest.mark.parametrize("source, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_single_cell(source, expected):
    assert by_line(triples(scan(source))) == by_line(expected)


@pytest.mark.parametrize("source", [c[1] for c in CLEAN], ids=[c[0] for c in CLEAN])
def test_clean(source):
    assert scan(source) == []


def test_policy_no_autograd_false_silences_only_autograd():
    source = cell("""
        import torch.autograd as ag
        w = torch.randn(3, requires_grad=True)
        loss.backward()
        y = F.relu(w)
        opt = torch.optim.SGD([w], 0.1)
        eval("1")
        """)
    relaxed = scan(source, policy=ScanPolicy(no_autograd=False))
    assert triples(relaxed) == [(V, "torch.nn", 4), (V, "torch.optim", 5), (S, "dynamic-code", 6)]
    strict = scan(source)
    assert [t for t in triples(strict) if t[1] == "autograd"] == [
        (V, "autograd", 1), (V, "autograd", 2), (V, "autograd", 3)]


def test_findings_sorted_and_deduplicated():
    found = scan("loss.backward(); w.grad.zero_(); w.requires_grad_()\nF.relu(F.relu(x))",
                 "import torch.nn")
    assert triples(found) == [(V, "autograd", 1), (V, "torch.nn", 2), (V, "torch.nn", 1)]
    keys = [(f.cell, f.line, f.rule) for f in found]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_two_rules_on_one_line_are_both_reported():
    found = scan("from torch import nn, autograd, optim")
    assert sorted(f.rule for f in found) == ["autograd", "torch.nn", "torch.optim"]


def test_messages_quote_the_spelling_and_explain():
    (f,) = scan("x = 1\nloss.backward()")
    assert "`loss.backward()`" in f.message and "autograd" in f.message
    (f,) = scan("p = x.softmax(1)")
    assert "`x.softmax(1)`" in f.message


def test_the_policy_tables_finding_wins_over_a_checks_own_on_one_line():
    (f,) = scan("torch.autograd.grad(l, w)")
    assert (f.rule, f.check) == ("autograd", "attribute_path")
    assert "(`.grad`)" not in f.message


def test_findings_are_frozen_and_name_their_rule_and_check():
    found = scan("import torch.nn", "eval('1')", "x = (", "%pip install x")
    assert [(f.severity, f.rule, f.check) for f in found] == [
        (V, "torch.nn", "imported_path"), (S, "dynamic-code", "free_builtin"), (U, "syntax", "parse"),
        (S, "process", "magics")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].line = 2
    assert all(RULES[f.rule] == f.severity and f.message.endswith(".") for f in found)


@pytest.mark.parametrize("src, flagged", [
    ("torch.allclose = lambda *a, **k: True", True),
    ("import numpy as np\nnp.isfinite = None", True),
    ("torch.Tensor.__eq__ = lambda a, b: True", True),
    ("self.params = {}", False),
    ("layer.params['W'] = W", False),
])
def test_patching_a_library_is_flagged_for_review(src, flagged):
    found = [f for f in scan_cells([(0, src)], preamble="import torch") if f.rule == "monkeypatch"]
    assert bool(found) == flagged
    assert all(f.severity == "suspicious" for f in found)


def test_what_a_check_returns_is_reported_under_its_name(monkeypatch):
    def exit_named(ctx):
        return [Hit("process", ctx.node, "stops the Python process")] if ctx.node.id == "leave" else []

    monkeypatch.setitem(rules.REGISTRY, "name", (exit_named,))
    (f,) = scan("x = 1\nleave")
    assert (f.severity, f.rule, f.line, f.check) == (S, "process", 2, "exit_named")
    assert f.message.startswith("`leave` stops the Python process")


def test_a_crashing_check_is_logged_and_the_other_checks_go_on(monkeypatch, caplog):
    def broken_check(ctx):
        raise KeyError("bug in a check")

    monkeypatch.setitem(rules.REGISTRY, "call", (broken_check,) + rules.REGISTRY["call"])
    with caplog.at_level("ERROR", logger=rules.__name__):
        found = scan("y = F.relu(x)\neval('1')\nopen('/etc/passwd')", "loss.backward()")
    # the later checks of the same node kind ran too (file-access is a call check)
    assert triples(found) == [(V, "torch.nn", 1), (S, "dynamic-code", 2), (S, "file-access", 3),
                              (V, "autograd", 1)]
    assert "broken_check" in caplog.text and "KeyError" in caplog.text


def scan_corpus() -> dict[str, list]:
    """Every finding on the cases of scan_cases.py and the code cells of the course's notebooks
    (source/, release/, the example submissions in submitted/ that are notebooks)."""
    found = {name: scan(source) for name, source, *_ in FORBIDDEN + SUSPICIOUS_USES + DYNAMIC + CLEAN}
    found |= {name: scan(OWN_LAYER, source) for name, source, _ in OWN_BACKWARD}
    found["student-solution"] = scan(*STUDENT_SOLUTION)
    notebooks = [path for folder in ("source", "release", "submitted") for path in ROOT.glob(f"{folder}/**/*.ipynb")]
    for path in sorted(notebooks):
        try:
            notebook = nbformat.read(path, as_version=4)
        except nbformat.reader.NotJSONError:
            continue  # frank_malformed
        cells = [(index, c.source) for index, c in enumerate(notebook.cells) if c.cell_type == "code"]
        found[str(path.relative_to(ROOT))] = scan_cells(cells[1:], preamble=cells[0][1])
    return found


def test_the_registrys_order_changes_no_finding(monkeypatch):
    expected = scan_corpus()
    assert len([name for name in expected if name.endswith(".ipynb")]) == 7
    assert sum(len(found) for found in expected.values()) > 200
    registry = dict(rules.REGISTRY)
    for seed in range(3):
        rng = random.Random(seed)
        shuffled = {kind: tuple(rng.sample(checks, len(checks))) for kind, checks in registry.items()}
        assert shuffled != registry
        monkeypatch.setattr(rules, "REGISTRY", shuffled)
        assert scan_corpus() == expected, f"seed {seed}"
