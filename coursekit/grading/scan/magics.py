"""IPython magics and ``get_ipython()`` calls, expanded before the walk: what
they run becomes findings, and the Python code inside them becomes more units
to walk.

:func:`expand` turns a cell's prepared items into the steps the walker takes
in order: a unit to walk, a part that could not be parsed, a finding
(:class:`~.findings.Hit`), or an expression to visit where it stands.  A
``%%name`` cell magic is replaced by its steps; a unit keeps, for every call
that may be ``get_ipython().<method>(...)`` (what IPython's transform writes
for ``%magic`` and ``!shell`` lines), the steps it expands to, which the
walker takes instead of visiting the call when its receiver resolves to
``get_ipython()``.

``%time``/``%timeit``/``%prun``/``%debug`` take a Python statement, cell
magics such as ``%%time`` a Python body; shell, package and file magics are
reported; any cell magic the scanner does not know is handed to a person.
Line numbers of code inside a magic are the line of the magic.
"""

from __future__ import annotations

import ast
from typing import Optional, Union

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
from .cells import PARSE_ERRORS, Broken, CellMagic, Unit, parse, pinned_to_line, prepare
from .findings import Hit
from .resolver import str_const

Step = Union[Unit, Broken, Hit, ast.expr]
CHECK = "magics"  # the check id of the findings made here
IPYTHON_RUNS = IPY_SHELL | {"run_line_magic", "run_cell_magic"}


def expand(items: list) -> list[Step]:
    """The walker's steps for a cell's prepared items (see the module's docstring)."""
    steps: list[Step] = []
    for item in items:
        if isinstance(item, CellMagic):
            steps += cell_magic_steps(item)
        else:
            if isinstance(item, Unit):
                item.magics = magic_calls(item)
            steps.append(item)
    return steps


def magic_calls(unit: Unit) -> dict[ast.Call, list[Step]]:
    """Every call that may be ``get_ipython().<method>(...)``, and its steps."""
    if unit.text.isascii() and not any(method in unit.text for method in IPYTHON_RUNS):
        return {}  # most units, without walking the tree (a non-ASCII name may be NFKC-normalised to one)
    return {node: call_steps(unit, node) for node in ast.walk(unit.tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in IPYTHON_RUNS}


def call_steps(unit: Unit, node: ast.Call) -> list[Step]:
    """What ``get_ipython().<method>(...)`` expands to, if its receiver is get_ipython()."""
    assert isinstance(node.func, ast.Attribute)  # as expand() chose it
    meth = node.func.attr
    if meth in IPY_SHELL:
        return [Hit("process", node, "runs a shell command", check=CHECK)]
    lits = [str_const(a) for a in node.args]
    name, arg = (lits[0], lits[1]) if len(lits) >= 2 else (None, None)
    generated = node.lineno in unit.generated  # written by IPython's transform
    steps: list[Step] = []
    if not generated or name is None or arg is None:
        steps.append(Hit("dynamic-code", node, "runs code through the IPython shell", check=CHECK))
    if name is None or arg is None:
        return steps + list(node.args)
    line = unit.line_of(node.lineno)
    if meth == "run_line_magic":
        return steps + line_magic_steps(name, arg, node, line)
    body = lits[2] if len(lits) > 2 and lits[2] is not None else ""
    # the body has its own lines; all of them point at this call
    magic = CellMagic(name, arg, line, pinned_to_line(prepare(body, 0), line) if name in PYTHON_CELL_MAGICS else [])
    return steps + cell_magic_steps(magic, node)


def line_magic_steps(name: str, arg: str, node: ast.Call, line: int) -> list[Step]:
    if name in CODE_MAGIC_OPTIONS:
        return magic_code_steps(name, arg, line, node, None)
    if name in PROCESS_LINE_MAGICS:
        return [Hit("process", node, "runs a shell command or installs packages", check=CHECK)]
    if name in DYNAMIC_LINE_MAGICS:
        return [Hit("dynamic-code", node, "runs or loads code from elsewhere", check=CHECK)]
    if name in FILE_LINE_MAGICS:
        return [Hit("file-access", node, "changes the working directory", check=CHECK)]
    return []


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


def magic_code_steps(name: str, arg: str, line: int, node: Optional[ast.Call],
                     spelled: Optional[str]) -> list[Step]:
    """The Python statement given to %time/%timeit/%prun/%debug, as a unit on the magic's line."""
    code = strip_options(arg, CODE_MAGIC_OPTIONS[name])
    if not code:
        return []
    try:
        tree = parse(code)
    except PARSE_ERRORS:
        return [Hit("dynamic-code", node, f"gives `%{name}` code that could not be parsed", spelled, line,
                    check=CHECK)]
    return expand([Unit(tree, code, lambda n: line, frozenset())])  # `line` is never rebound here


def cell_magic_steps(magic: CellMagic, node: Optional[ast.Call] = None) -> list[Step]:
    spelled = f"%%{magic.name} {magic.args}".strip()
    if magic.name in PYTHON_CELL_MAGICS:
        setup: list[Step] = []
        if magic.name in ("timeit", "prun", "debug") and magic.args:
            # e.g. `%%timeit -n 3 setup_code`: the setup code runs too
            setup = magic_code_steps(magic.name, magic.args, magic.line, None, spelled)
        return setup + expand(magic.body)
    if magic.name in PROCESS_CELL_MAGICS:
        detail, rule = "runs another program on the cell's contents", "process"
    elif magic.name in DYNAMIC_CELL_MAGICS:
        detail, rule = "writes or runs code outside Python", "dynamic-code"
    elif magic.name not in HARMLESS_CELL_MAGICS:
        detail, rule = "uses a cell magic whose body is not checked", "dynamic-code"
    else:
        return []
    return [Hit(rule, node, detail, spelled, magic.line, check=CHECK)]
