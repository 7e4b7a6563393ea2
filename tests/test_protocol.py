"""The host and the sandbox meet only through in_sandbox/protocol.py: what runs inside imports nothing
else of the package, the protocol itself only the standard library, and both sides agree on it."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from coursekit.grading.probe_data import make_inputs
from coursekit.in_sandbox import protocol
from coursekit.in_sandbox.protocol import (
    MAX_API_CHARS,
    MAX_FOUND,
    MAX_FOUND_CHARS,
    MAX_GUARD_RECORDS,
    MAX_RUN_RECORDS,
    MAX_STATUS_CHARS,
    MAX_WITHIN,
    MAX_WITHIN_CHARS,
    OK,
    PROBE_NAMES,
    ForbiddenCall,
    GuardRecord,
    GuardReport,
    ImportedData,
    RunLog,
    RunReport,
    RunRequest,
    RuntimeViolation,
    Status,
    WorkerAnswer,
    WorkerRequest,
)

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


CALL = ForbiddenCall(3, 2, "torch.Tensor.backward", False, "autograd", ("train", "Linear"))
LOAD = ImportedData(4, None, "torch.load", True)
RECORD = GuardRecord(7, 8, False, 2, "torch.softmax", "ready-made", ("helper",))
LOG = RunLog(cells={3: OK, 5: Status("error", "NameError: x"), 9: Status("timeout", "stopped after 5 s")},
             notebook_timed_out=True, probes={"linear": OK, "train": Status("error", "RuntimeError: boom")},
             aborted="the kernel stopped", replays=2, runtime_violations=[RuntimeViolation(5, ("grad mode is on",))],
             forbidden_calls=[CALL], imported_data=[LOAD], guard_removed_at=9)
JSON_MESSAGES = [Status("died"), CALL, LOAD, RuntimeViolation(5, ("a", "b")), RECORD,
                 GuardReport([RECORD], [GuardRecord(None, 8, True, 1, "pickle.load")], True, ("grad mode is on",)), LOG]


def through_json(data: dict) -> object:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("message", JSON_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_json(message):
    assert type(message).from_json(through_json(message.to_json())) == message


def test_the_worker_lines_and_the_report_survive_the_pipes():
    request = WorkerRequest(("n.ipynb", "--probes", "train"), {"HOME": "/h"}, 2, "/submission/runner.log", ("x = 1",))
    assert WorkerRequest.from_line(request.to_line()) == request
    for answer in (WorkerAnswer(ready=True), WorkerAnswer(returncode=3, report='{"log": {}}')):
        assert WorkerAnswer.from_line(answer.to_line()) == answer
    report = RunReport(LOG, '{"cells": []}')
    assert RunReport.from_text(report.to_bytes().decode()) == report


def test_cell_statuses_say_what_they_said_as_sentences():
    assert [status.sentence() for status in (OK, Status("error", "NameError: x"), Status("died"),
                                             Status("skipped", "notebook time limit reached"))] == [
        "ok", "error: NameError: x", "kernel died while running this cell", "skipped: notebook time limit reached"]
    assert LOG.problems()[:2] == [(5, "error: NameError: x"), (9, "timeout: stopped after 5 s")]
    assert len(Status("error", "E" * 2 * MAX_STATUS_CHARS).sentence()) == MAX_STATUS_CHARS


def test_records_with_a_missing_or_ill_typed_identity_are_dropped():
    call = CALL.to_json()
    for bad in ({**call, "cell": "3"}, {**call, "cell": True}, {**call, "rule": "made-up"}, {**call, "api": 5},
                {k: v for k, v in call.items() if k != "cell"}, "junk", None):
        assert ForbiddenCall.from_json(bad) is None, bad
    assert ImportedData.from_json({**LOAD.to_json(), "cell": 1.5}) is None
    assert RuntimeViolation.from_json({"found": ["a"]}) is None
    assert GuardRecord.from_json({**RECORD.to_json(), "api": None}) is None
    assert Status.from_json({"kind": "made-up"}) is None
    assert Status.from_json({"kind": "ok", "detail": 3}) is None
    assert Status.from_json("error: E") is None


def test_ill_typed_fields_fall_back_to_their_defaults():
    call = ForbiddenCall.from_json({**CALL.to_json(), "line": "2", "dynamic": "yes", "within": ["f", 3, None]})
    assert call == ForbiddenCall(3, None, CALL.api, False, "autograd", ("f",))
    assert RuntimeViolation.from_json({"cell": 2, "found": "grad mode"}) == RuntimeViolation(2, ())
    record = GuardRecord.from_json({"execution": "7", "running": True, "line": 2.0, "api": "a", "rule": 3})
    assert record == GuardRecord(None, None, False, None, "a")
    assert GuardReport.from_json({"calls": "junk", "guard_active": 1, "autograd": [1, "x"]}) == GuardReport(
        autograd=("x",))
    assert WorkerRequest.from_json({"argv": ["a", 1], "env": {"A": "1", "B": 2, 3: "x"}, "threads": "2"}) == (
        WorkerRequest(("a",), {"A": "1"}, 1, ""))
    assert WorkerAnswer.from_line(b'{"returncode": "0", "report": 5}') == WorkerAnswer()
    assert [WorkerAnswer.from_line(line) for line in (b"", b"junk", b"[1]")] == [None, None, None]
    assert RunReport.from_text('{"log": [], "executed": 5}') == RunReport()
    assert RunReport.from_text("not json") == RunReport() and RunReport.from_text("[" * 100_000) == RunReport()


def test_sizes_are_capped():
    call = ForbiddenCall.from_json({**CALL.to_json(), "api": "a" * 1000, "within": ["w" * 1000] * 100})
    assert call is not None and len(call.api) == MAX_API_CHARS
    assert len(call.within) == MAX_WITHIN and {len(name) for name in call.within} == {MAX_WITHIN_CHARS}
    violation = RuntimeViolation.from_json({"cell": 1, "found": ["f" * 1000] * 100})
    assert violation is not None and len(violation.found) == MAX_FOUND
    assert {len(found) for found in violation.found} == {MAX_FOUND_CHARS}
    many = {"calls": [RECORD.to_json()] * 500, "imports": [RECORD.to_json()] * 500, "guard_active": True}
    report = GuardReport.from_json(many)
    assert len(report.calls) == len(report.imports) == MAX_GUARD_RECORDS
    log = RunLog.from_json({key: [value.to_json()] * 3000 for key, value in
                            (("forbidden_calls", CALL), ("imported_data", LOAD),
                             ("runtime_violations", RuntimeViolation(1, ())))})
    assert len(log.forbidden_calls) == len(log.imported_data) == len(log.runtime_violations) == MAX_RUN_RECORDS
    log = RunLog.from_json({"cells": {"1": {"kind": "error", "detail": "E" * 1000}}, "aborted": "A" * 1000,
                            "probes": {"linear": {"kind": "error", "detail": "P" * 1000}, "train": "ok"}})
    assert len(log.cells[1].detail) == len(log.aborted or "") == len(log.probes["linear"].detail) == MAX_STATUS_CHARS
    assert set(log.probes) == {"linear"}  # "ok" as a bare string is no status


def test_an_oversized_report_is_no_report(monkeypatch):
    text = RunReport(LOG).to_bytes().decode()
    monkeypatch.setattr(protocol, "MAX_REPORT_BYTES", len(text) - 1)
    assert RunReport.from_text(text) == RunReport()
    monkeypatch.setattr(protocol, "MAX_REPORT_BYTES", len(text))
    assert RunReport.from_text(text).log == LOG


def test_each_cap_is_defined_once_in_the_protocol():
    """No module of the package names a cap of the protocol's again (each side imports it)."""
    caps = {name for name in vars(protocol) if name.startswith("MAX_")}
    for path in (ROOT / "coursekit").rglob("*.py"):
        if path.name == "protocol.py":
            continue
        assigned = {target.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
        assert not assigned & caps, (path.name, assigned & caps)
