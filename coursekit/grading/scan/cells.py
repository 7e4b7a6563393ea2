"""Preparation of notebook cells: IPython syntax turned into parsed Python.

A cell becomes a list of items: a :class:`Unit` (parsed Python plus a map from
its lines back to the student's lines), a :class:`CellMagic` (``%%name`` with,
for Python cell magics, its prepared body) or a :class:`Broken` part that
could not be parsed.  IPython's ``TransformerManager`` rewrites ``%magic``
and ``!shell`` lines into ``get_ipython()`` calls, which :mod:`.magics` then
expands before the walk.  A :class:`Place` tells where a node of a unit is in
the student's cell, and how the student spelled it.
"""

from __future__ import annotations

import ast
import textwrap
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .apis import PYTHON_CELL_MAGICS

PARSE_ERRORS = (SyntaxError, ValueError, MemoryError, RecursionError)


@dataclass
class Unit:
    """Parsed Python with a map from its lines to the student's lines."""

    tree: ast.Module
    text: str
    line_of: Callable[[int], int]
    generated: frozenset  # unit lines that IPython rewrote (magics, `!`)
    magics: dict[ast.Call, list] = field(default_factory=dict)  # get_ipython() call -> its steps (magics.expand)


@dataclass
class CellMagic:
    name: str
    args: str
    line: int
    body: list  # prepared items of the body (only for Python cell magics)


@dataclass
class Broken:
    line: int
    error: str
    syntax: bool = True  # False: parser limits, null bytes, internal errors


_transformer_manager = None


def _transformer():
    global _transformer_manager
    if _transformer_manager is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _transformer_manager = TransformerManager()
    return _transformer_manager


def parse(text: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text)


def source_text(src) -> str:
    """A cell's source as one string (notebooks may store a list of lines)."""
    if src is None:
        return ""
    if isinstance(src, (list, tuple)):
        return "".join(str(s) for s in src)
    return str(src)


def split_lines(text: str) -> list:
    """Split like Python's tokenizer: only \\r\\n, \\r and \\n end a line
    (str.splitlines would also split on form feeds, \\x85, \\u2028, ...)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if text else []


def align(orig: list, new: list) -> tuple[dict, set]:
    """Map lines of IPython's transformed cell back to the student's lines.

    The transform keeps lines 1:1 except that it drops leading blank lines,
    joins a backslash-continued magic into one line, and may dedent or strip
    prompts (still 1:1).  Linear two-pointer walk; returns
    ({transformed line: original line}, {transformed lines that were rewritten}).
    """
    mapping: dict[int, int] = {}
    generated: set = set()
    i = 0
    if new and new[0].strip():
        while i < len(orig) and not orig[i].strip():
            i += 1
    for j, line in enumerate(new):
        if i >= len(orig):
            mapping[j + 1] = max(len(orig), 1)
            generated.add(j + 1)
            continue
        mapping[j + 1] = i + 1
        if orig[i] == line:
            i += 1
            continue
        generated.add(j + 1)
        if "get_ipython()" in line:  # a magic: may have swallowed `\` continuations
            while i < len(orig) - 1 and orig[i].rstrip().endswith("\\"):
                i += 1
        i += 1
    return mapping, generated


def prepare(src: str, offset: int = 0) -> list:
    """Turn (part of) a cell into parsed items; ``offset`` = student lines
    before ``src``'s first line."""
    lines = split_lines(src)
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    rest = textwrap.dedent("\n".join(lines[first:]))
    if rest.startswith("%%"):
        header = rest.split("\n", 1)[0]
        name, _, args = header[2:].rstrip().partition(" ")
        if not name.endswith("?"):
            magic_line = offset + first + 1
            body_src = "\n".join(lines[first + 1:])
            body = prepare(body_src, magic_line) if name in PYTHON_CELL_MAGICS else []
            return [CellMagic(name, args.strip(), magic_line, body)]
    # Plain Python needs no IPython transform (every IPython-only spelling is
    # invalid Python), and skipping it keeps big cells fast: IPython's
    # transform re-tokenises the whole cell once per magic.
    try:
        tree = parse(src)
    except PARSE_ERRORS:
        return _prepare_ipython(src, lines, offset)
    n_lines = max(len(lines), 1)

    def line_of(n: int, _o: int = offset, _n: int = n_lines) -> int:
        return _o + min(max(n, 1), _n)

    return [Unit(tree, src, line_of, frozenset())]


def _prepare_ipython(src: str, lines: list, offset: int) -> list:
    try:
        text = _transformer().transform_cell(src)
    except Exception:  # e.g. IPython's 500-rewrite limit: parse the raw source
        text = src
    mapping, generated = align(lines, split_lines(text))
    n_src = max(len(lines), 1)

    def line_of(n: int, _m=mapping, _o=offset, _n=n_src) -> int:
        return _o + min(max(_m.get(n, n), 1), _n)

    try:
        tree = parse(text)
    except SyntaxError as e:
        return [Broken(line_of(e.lineno or 1), e.msg or "invalid syntax")]
    except (ValueError, MemoryError, RecursionError) as e:
        return [Broken(offset + 1, str(e) or type(e).__name__, syntax=False)]
    return [Unit(tree, text, line_of, frozenset(generated))]


def pinned_to_line(items: list, line: int) -> list:
    """Items of a magic's body whose lines all point at the magic's line."""
    for item in items:
        if isinstance(item, Unit):
            item.line_of = lambda n: line  # `line` is never rebound here
            item.generated = frozenset()
        elif isinstance(item, (Broken, CellMagic)):
            item.line = line
    return items


@dataclass(frozen=True)
class Place:
    """A unit being walked, in cell ``cell`` whose student lines are ``cell_lines``."""

    unit: Unit
    cell: int
    cell_lines: list

    def line(self, node) -> int:
        return self.unit.line_of(getattr(node, "lineno", 1) or 1)

    def spell(self, node) -> str:
        """The student's spelling of a node (their line, for IPython syntax)."""
        n = getattr(node, "lineno", None)
        if n is not None and n in self.unit.generated:
            ln = self.unit.line_of(n)
            if 1 <= ln <= len(self.cell_lines):
                return self.cell_lines[ln - 1].strip()
        try:
            seg = ast.get_source_segment(self.unit.text, node)
        except Exception:
            seg = None
        if not seg:
            try:
                seg = ast.unparse(node)
            except Exception:
                seg = type(node).__name__
        return seg


def units(items: list) -> Iterable[Unit]:
    for item in items:
        if isinstance(item, Unit):
            yield item
        elif isinstance(item, CellMagic):
            yield from units(item.body)
