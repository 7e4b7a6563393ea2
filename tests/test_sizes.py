"""The sizes the code is held to, tests and benchmarks included: every function at most 40 lines, every
class at most 200, every module at most 600. Each file is parsed with `ast` (nothing is imported), and
the failure lists every offender."""
from __future__ import annotations

import ast

from conftest import ROOT

FOLDERS = ("coursekit", "tests", "bench")
MAX_FUNCTION, MAX_CLASS, MAX_MODULE = 40, 200, 600
# Modules exempt from every limit, each with its reason. Nothing else goes here.
ALLOWED: set[str] = set()


def offences(source: str, name: str) -> list[str]:
    """What in this module's source is over its limit, one line each (lines counted from `def` or
    `class` to the last line of the body; a module's, every line of the file)."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE:
        found.append(f"{name}: module of {lines} lines (at most {MAX_MODULE})")
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            limit, kind = (MAX_CLASS, "class") if isinstance(node, ast.ClassDef) else (MAX_FUNCTION, "function")
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{name}:{node.lineno}: {kind} {node.name} of {length} lines (at most {limit})")
    return found


def test_no_function_class_or_module_is_over_its_size():
    paths = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
    assert len(paths) > 100 and all(name in map(str, (p.relative_to(ROOT) for p in paths)) for name in ALLOWED)
    found = [offence for path in paths if str(path.relative_to(ROOT)) not in ALLOWED
             for offence in offences(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "over the size limits:\n" + "\n".join(found)


def test_the_size_check_finds_each_kind_of_offence():
    long_function = "def f():\n" + "    x = 1\n" * MAX_FUNCTION
    long_class = "class C:\n" + "    y = 2\n" * MAX_CLASS
    short = "def g():\n" + "    x = 1\n" * (MAX_FUNCTION - 1) + "class D:\n" + "    y = 2\n" * (MAX_CLASS - 1)
    assert offences(short, "ok.py") == []
    assert offences(long_function, "f.py") == [f"f.py:1: function f of {MAX_FUNCTION + 1} lines (at most 40)"]
    assert offences(long_class, "c.py") == [f"c.py:1: class C of {MAX_CLASS + 1} lines (at most 200)"]
    assert offences("\n" * MAX_MODULE + "z = 3\n", "m.py") == [f"m.py: module of {MAX_MODULE + 1} lines (at most 600)"]
