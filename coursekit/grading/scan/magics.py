"""IPython magics and ``get_ipython()`` calls: what they run, and the Python
code inside them, which is scanned like the rest of the cell.

``%time``/``%timeit``/``%prun``/``%debug`` take a Python statement, cell
magics such as ``%%time`` a Python body; shell, package and file magics are
reported; any cell magic the scanner does not know is handed to a person.
Line numbers of code inside a magic are the line of the magic.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from .apis import (
    CODE_MAGIC_OPTIONS,
    DYNAMIC_CELL_MAGICS,
    DYNAMIC_LINE_MAGICS,
    FILE_LINE_MAGICS,
    HARMLESS_CELL_MAGICS,
    IPY_SHELL,
    PROCESS_CELL_MAGICS,
    PROCESS_LINE_MAGICS,
    PYTHON_CELL_MAGICS,
)
from .cells import PARSE_ERRORS, CellMagic, Unit, parse, pinned_to_line, prepare
from .resolver import str_const

if TYPE_CHECKING:
    from .visitor import Walker


def ipython_call(walker: "Walker", node: ast.Call, f: ast.Attribute) -> bool:
    """Handle ``get_ipython().<method>(...)``; True when fully handled."""
    assert walker.unit is not None  # the walker is inside a unit while it visits nodes
    generated = node.lineno in walker.unit.generated  # written by IPython's transform
    meth = f.attr
    lits = [str_const(a) for a in node.args]
    if meth in IPY_SHELL:
        walker.report("process", node, "runs a shell command")
        return True
    if meth not in ("run_line_magic", "run_cell_magic"):
        return False  # ordinary classification (run_cell, ex, ev, ...)
    if not generated:
        walker.report("dynamic-code", node, "runs code through the IPython shell")
    if len(lits) < 2 or lits[0] is None or lits[1] is None:
        if generated:
            walker.report("dynamic-code", node, "runs code through the IPython shell")
        for a in node.args:
            walker.visit(a)
        return True
    line = walker.line(node)
    if meth == "run_line_magic":
        line_magic(walker, lits[0], lits[1], node, line)
    else:
        body = lits[2] if len(lits) > 2 and lits[2] is not None else ""
        magic = CellMagic(lits[0], lits[1], line, [])
        if lits[0] in PYTHON_CELL_MAGICS:
            # the body has its own lines; all of them point at this call
            magic.body = pinned_to_line(prepare(body, 0), line)
        cell_magic(walker, magic, node)
    return True


def line_magic(walker: "Walker", name: str, arg: str, node, line: int) -> None:
    if name in CODE_MAGIC_OPTIONS:
        magic_code(walker, name, arg, line, walker.spell(node))
    elif name in PROCESS_LINE_MAGICS:
        walker.report("process", node, "runs a shell command or installs packages")
    elif name in DYNAMIC_LINE_MAGICS:
        walker.report("dynamic-code", node, "runs or loads code from elsewhere")
    elif name in FILE_LINE_MAGICS:
        walker.report("file-access", node, "changes the working directory")


def strip_options(code: str, options) -> str:
    """The statement after a magic's options (``-n 10 -r 3 f(x)`` -> ``f(x)``)."""
    code = code.strip()
    if options is None:
        return code
    while code.startswith("-"):
        parts = code.split(None, 1)
        tok = parts[0]
        code = parts[1] if len(parts) > 1 else ""
        if tok in options and code:  # the option's value
            parts = code.split(None, 1)
            code = parts[1] if len(parts) > 1 else ""
        code = code.strip()
    return code


def magic_code(walker: "Walker", name: str, arg: str, line: int, spelled: str) -> None:
    """Scan the Python statement given to %time/%timeit/%prun/%debug."""
    code = strip_options(arg, CODE_MAGIC_OPTIONS[name])
    if not code:
        return
    try:
        tree = parse(code)
    except PARSE_ERRORS:
        walker.report("dynamic-code", None, f"gives `%{name}` code that could not be parsed",
                      spelled=spelled, line=line)
        return
    walker.run_unit(Unit(tree, code, lambda n: line, frozenset()))  # `line` is never rebound here


def cell_magic(walker: "Walker", magic: CellMagic, node=None) -> None:
    spelled = f"%%{magic.name} {magic.args}".strip()
    if magic.name in PYTHON_CELL_MAGICS:
        if magic.name in ("timeit", "prun", "debug") and magic.args:
            # e.g. `%%timeit -n 3 setup_code`: the setup code runs too
            magic_code(walker, magic.name, magic.args, magic.line, spelled)
        walker.run_items(magic.body)
    elif magic.name in PROCESS_CELL_MAGICS:
        walker.report("process", node, "runs another program on the cell's contents",
                      spelled=spelled, line=magic.line)
    elif magic.name in DYNAMIC_CELL_MAGICS:
        walker.report("dynamic-code", node, "writes or runs code outside Python",
                      spelled=spelled, line=magic.line)
    elif magic.name not in HARMLESS_CELL_MAGICS:
        walker.report("dynamic-code", node, "uses a cell magic whose body is not checked",
                      spelled=spelled, line=magic.line)
