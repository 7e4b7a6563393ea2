"""The host and the sandbox meet only through in_sandbox/protocol.py: what runs inside imports nothing
else of the package, the protocol itself only the standard library, and both sides agree on it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from coursekit.grading.probe_data import make_inputs
from coursekit.in_sandbox import protocol
from coursekit.in_sandbox.protocol import PROBE_NAMES, RunRequest

IN_SANDBOX = ROOT / "coursekit" / "in_sandbox"
SIBLINGS = {path.stem for path in IN_SANDBOX.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            found.add(".")
    return found


@pytest.mark.parametrize("path", sorted(IN_SANDBOX.glob("*.py")), ids=lambda p: p.name)
def test_code_inside_the_sandbox_imports_nothing_of_the_package(path):
    assert not imported_modules(path) & {"coursekit", "."}, f"{path.name} imports from the package"


def test_the_protocol_uses_only_the_standard_library():
    outside = imported_modules(IN_SANDBOX / "protocol.py") - set(sys.stdlib_module_names) - {"__future__"}
    assert outside == set()


def test_files_the_protocol_names_exist():
    for name in (protocol.WORKER_SCRIPT, protocol.PROBES_FILE, protocol.GUARD_FILE, protocol.RECORD_FILE):
        assert (IN_SANDBOX / name).is_file(), name


def test_the_probes_in_the_kernel_are_the_probes_the_host_reads():
    tree = ast.parse((IN_SANDBOX / protocol.PROBES_FILE).read_text())
    defined = [node.name.removeprefix("probe_") for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name.startswith("probe_")]
    assert sorted(defined) == sorted(PROBE_NAMES)


def test_every_input_a_probe_reads_is_made_by_the_host():
    tree = ast.parse((IN_SANDBOX / protocol.PROBES_FILE).read_text())
    read = {node.slice.value for node in ast.walk(tree) if isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name) and node.value.id == "inputs" and isinstance(node.slice, ast.Constant)}
    made = set(make_inputs(0))
    assert read and read <= made, read - made


def test_a_request_survives_the_command_line():
    request = RunRequest("n.ipynb", cell_seconds=7, notebook_seconds=30, output_bytes=1000, probes=("names", "train"),
                         no_autograd=False, probe_seconds=9, scratch="/tmp/x")
    assert RunRequest.from_argv(request.to_argv()) == request
    assert RunRequest.from_argv(RunRequest("n.ipynb", 1, 2, 3, probes=()).to_argv()).probes == ()


def test_a_request_for_an_unknown_probe_is_refused():
    with pytest.raises(SystemExit):
        RunRequest.from_argv(RunRequest("n.ipynb", 1, 2, 3).to_argv() + ["--probes", "names,made_up"])
