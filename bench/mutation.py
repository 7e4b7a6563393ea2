"""Mutation run on the code that decides points: do the fast tests notice when it changes?

Usage (from the repository root):
    nice -n 10 .venv/bin/python bench/mutation.py [--limit 30] [--seed 0] [--timeout 300]
        [--module coursekit/grading/checks.py ...] [--tests tests/test_checks.py ...]
        [--deselect tests/test_score.py::test_name ...]

Put first in --tests the file that kills a module's mutants soonest: with -x, a killed mutant stops there.
--deselect runs without a test (e.g. to measure what a new test kills).

Each target module is parsed with `ast`; every place one small change applies is a candidate mutant
(comparison flips < <=, > >=, == !=; and <-> or; + <-> -, * <-> /; a numeric constant c -> c + 1 or
c * 2; True <-> False; a `not` removed; a short `return x` -> `return None`). At most --limit of them
per module are drawn with --seed, so a run is reproducible. The repository is copied once to a
temporary folder (without .venv and heavy folders; .venv is symlinked); each mutant is written over
the module there, never in the worktree, and the fast tests run with -x. A failing, crashing or
timed-out run kills the mutant. A summary table and the survivors (file:line, mutation) are printed.
"""
from __future__ import annotations

import argparse
import ast
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["coursekit/grading/checks.py", "coursekit/grading/score.py"]
TESTS = ["tests/test_checks.py", "tests/test_score.py"]
HEAVY = (".venv", ".git", "autograded", "submitted", "feedback", "release", "__pycache__")
FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
         ast.And: ast.Or, ast.Or: ast.And, ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    description: str
    node_index: int  # position of the mutated node in ast.walk order
    variant: int     # which of the node's mutations


def mutations(node: ast.AST) -> list[str]:
    """The descriptions of the changes that apply to this node (one per variant)."""
    if isinstance(node, (ast.Compare, ast.BoolOp, ast.BinOp)):
        op = node.ops[0] if isinstance(node, ast.Compare) else node.op
        return [f"{type(op).__name__} -> {FLIPS[type(op)].__name__}"] if type(op) in FLIPS else []
    if isinstance(node, ast.Constant) and type(node.value) is bool:
        return [f"{node.value} -> {not node.value}"]
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        doubled = [f"{node.value!r} -> {node.value * 2!r}"] if node.value else []  # 0 * 2 is no change
        return [f"{node.value!r} -> {node.value + 1!r}", *doubled]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ["`not` removed"]
    if isinstance(node, ast.Return) and node.value is not None and len(ast.unparse(node.value)) <= 40:
        return ["return x -> return None"]
    return []


def apply(node: ast.AST, variant: int) -> ast.AST:
    """The node with its mutation `variant` applied (the caller replaces it in the tree)."""
    if isinstance(node, ast.Compare):
        node.ops[0] = FLIPS[type(node.ops[0])]()
    elif isinstance(node, (ast.BoolOp, ast.BinOp)):
        node.op = FLIPS[type(node.op)]()
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        node.value = not node.value
    elif isinstance(node, ast.Constant):
        node.value = node.value + 1 if variant == 0 else node.value * 2
    elif isinstance(node, ast.UnaryOp):
        return node.operand
    elif isinstance(node, ast.Return):
        node.value = ast.Constant(None)
    return node


def candidates(module: str) -> list[Mutant]:
    tree = ast.parse((ROOT / module).read_text())
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, scopes)
                  and n.body and isinstance(n.body[0], ast.Expr)}
    return [Mutant(module, node.lineno, text, index, variant) for index, node in enumerate(ast.walk(tree))
            if id(node) not in docstrings for variant, text in enumerate(mutations(node))]


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((ROOT / mutant.module).read_text())
    target = list(ast.walk(tree))[mutant.node_index]
    replacement = apply(target, mutant.variant)
    if replacement is not target:  # a removed `not`: put its operand where the UnaryOp was
        for parent in ast.walk(tree):
            for name, value in ast.iter_fields(parent):
                if value is target:
                    setattr(parent, name, replacement)
                elif isinstance(value, list) and any(v is target for v in value):
                    value[[id(v) for v in value].index(id(target))] = replacement
    return ast.unparse(ast.fix_missing_locations(tree))


def killed(copy_root: Path, mutant: Mutant, tests: list[str], timeout: float) -> bool:
    """Whether the tests (pytest arguments) fail, crash or time out on the mutant."""
    (copy_root / mutant.module).write_text(mutated_source(mutant))
    command = [str(copy_root / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(command, cwd=copy_root, capture_output=True, timeout=timeout).returncode != 0
    except subprocess.TimeoutExpired:
        return True


def run(modules: list[str], tests: list[str], limit: int, seed: int, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix="mutation-") as temp:
        copy_root = Path(temp) / "repo"
        shutil.copytree(ROOT, copy_root, ignore=shutil.ignore_patterns(*HEAVY))
        (copy_root / ".venv").symlink_to((ROOT / ".venv").resolve())
        rows, survivors = [], []
        for module in modules:
            drawn = sorted(random.Random(seed).sample(candidates(module), min(limit, len(candidates(module)))),
                           key=lambda m: (m.line, m.node_index, m.variant))
            original, dead = (ROOT / module).read_text(), 0
            for number, mutant in enumerate(drawn, 1):
                started = time.monotonic()
                outcome = killed(copy_root, mutant, tests, timeout)
                dead += outcome
                survivors += [] if outcome else [mutant]
                print(f"[{module} {number}/{len(drawn)}] {mutant.line}: {mutant.description}: "
                      f"{'killed' if outcome else 'SURVIVED'} ({time.monotonic() - started:.0f} s)", flush=True)
            (copy_root / module).write_text(original)
            rows.append((module, len(drawn), dead))
    report(rows, survivors)
    return 0


def report(rows: list[tuple[str, int, int]], survivors: list[Mutant]) -> None:
    print(f"\n{'module':36} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6}")
    for module, total, dead in rows:
        print(f"{module:36} {total:7} {dead:6} {total - dead:8} {dead / total if total else 1:6.0%}")
    print("\nsurvivors:" if survivors else "\nno survivors")
    for mutant in survivors:
        print(f"  {mutant.module}:{mutant.line}: {mutant.description}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append",
                        help="a module to mutate (repeatable); default: checks.py, score.py")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="the test files run against each mutant")
    parser.add_argument("--deselect", action="append", default=[], help="a test id not to run (repeatable)")
    parser.add_argument("--limit", type=int, default=30, help="at most this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="the seed that draws the mutants")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a test run counts as killed")
    parser.add_argument("--list", action="store_true", help="only list the drawn candidates' counts")
    args = parser.parse_args(argv)
    modules = args.module or MODULES
    if args.list:
        for module in modules:
            print(module, len(candidates(module)), "candidates")
        return 0
    tests = args.tests + [f"--deselect={node}" for node in args.deselect]
    return run(modules, tests, args.limit, args.seed, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
