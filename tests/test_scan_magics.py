"""The static scanner on code it cannot see whole: dynamic code, IPython magics and shell escapes (expanded
before the walk, coursekit.grading.scan.magics), cells that do not parse, encoded blobs."""
from __future__ import annotations

import ast

import pytest

from coursekit.grading.scan import scan_cells
from coursekit.grading.scan.cells import Unit, prepare
from coursekit.grading.scan.findings import Hit
from coursekit.grading.scan.magics import expand
from scan_cases import DYNAMIC
from support import S, U, V, by_line, scan, triples


@pytest.mark.parametrize("source, expected", [c[1:] for c in DYNAMIC], ids=[c[0] for c in DYNAMIC])
def test_dynamic_code_and_magics(source, expected):
    assert by_line(triples(scan(source))) == by_line(expected)


def test_a_line_magic_expands_to_a_unit_on_its_line_before_the_walk():
    (unit,) = expand(prepare("x = 1\n%timeit -n 3 F.relu(x)"))
    assert isinstance(unit, Unit)
    ((call, steps),) = unit.magics.items()
    assert isinstance(call, ast.Call) and call.func.attr == "run_line_magic"
    (code,) = steps
    assert isinstance(code, Unit) and ast.unparse(code.tree) == "F.relu(x)"
    assert code.line_of(1) == 2


def test_a_shell_cell_magic_expands_to_its_finding():
    (hit,) = expand(prepare("\n%%bash\nls /\n"))
    assert isinstance(hit, Hit)
    assert (hit.rule, hit.line, hit.spelled, hit.check) == ("process", 2, "%%bash", "magics")


def test_a_typed_magic_call_on_another_object_is_not_expanded():
    assert scan("class Shell:\n    def run_line_magic(self, name, code):\n        pass\n"
                "Shell().run_line_magic('time', 'loss.backward()')") == []
    assert triples(scan("get_ipython().run_line_magic('time', 'loss.backward()')")) == [
        (V, "autograd", 1), ("suspicious", "dynamic-code", 1)]


def test_syntax_error_cell_then_scanning_continues():
    found = scan("x = 1\nwhile True print(x)", "loss.backward()", "import torch.nn as nn")
    assert triples(found) == [(U, "syntax", 2), (V, "autograd", 1), (V, "torch.nn", 1)]
    assert [f.cell for f in found] == [0, 1, 2]
    assert "syntax error" in found[0].message


def test_messages_quote_the_magic_as_written():
    (f,) = scan("!pip install foo")
    assert "`!pip install foo`" in f.message
    (f,) = scan("%%bash\nls\n")
    assert "`%%bash`" in f.message


# An odd cell -> what the scan reports for it (severity, rule, line): nothing, its magic or a syntax error.
WEIRD_CELLS = {
    "": [], "\n\n": [], "   ": [], "%%time": [], "%time": [], "?": [],
    "%%": [(S, "dynamic-code", 1)], "!": [(S, "process", 1)],
    "\x00": [(U, "syntax", 1)], "x = '''": [(U, "syntax", 1)], "(" * 300 + ")" * 300: [(U, "syntax", 1)],
    "def f():\n\treturn 1\n        return 2": [(U, "syntax", 3)], "@": [(U, "syntax", 1)], "\\": [(U, "syntax", 1)],
}


@pytest.mark.parametrize("weird", list(WEIRD_CELLS))
def test_never_raises(weird):
    """An odd cell is reported for what it is, and the next cell is still scanned as usual."""
    found = scan(weird, "loss.backward()")
    assert triples([f for f in found if f.cell == 0]) == WEIRD_CELLS[weird]
    assert triples([f for f in found if f.cell == 1]) == [(V, "autograd", 1)]
    assert {f.cell for f in found} <= {0, 1}


def test_a_large_literal_is_an_encoded_blob_for_review():
    blob = "QUJD" * 1000
    findings = scan_cells([(3, f"x = 1\nweights = '{blob}'"), (4, "note = 'short'")])
    assert [(f.severity, f.rule, f.cell, f.line) for f in findings] == [("suspicious", "encoded-blob", 3, 2)]
    assert findings[0].check == "large_literals"


def test_a_magic_method_spelled_in_other_unicode_is_still_expanded():
    assert triples(scan('get_ipython().ｒｕｎ_line_magic("time", "loss.backward()")')) == [
        (V, "autograd", 1), ("suspicious", "dynamic-code", 1)]
