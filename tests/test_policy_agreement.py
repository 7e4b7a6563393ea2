"""The forbidden-API policy is one table, protocol.FORBIDDEN_API_RULES (the run-time guard's rule id -> the static
scanner's): the guard (in_sandbox/instrument.py), the grader's messages for it (grading/policy.py) and the scanner
use exactly its ids, and the guard and the scanner forbid the same APIs under the same rule, but for the
exceptions written here."""
from __future__ import annotations

import importlib

from conftest import ROOT
from coursekit.grading import policy
from coursekit.grading.scan import RULES, VIOLATION
from coursekit.grading.scan.apis import ALLOWED, API_RULES, READY_MADE, classify
from coursekit.grading.scan.findings import SCAN_ONLY_RULES
from coursekit.in_sandbox.protocol import FORBIDDEN_API_RULES
from support import load_module, scan

GUARD = load_module("coursekit_guard_policy_under_test", ROOT / "coursekit" / "in_sandbox" / "instrument.py")
# The scanner reports everything in torch._C for review ("introspection"), where the guard watches one switch.
SCAN_REVIEWS = {"torch._C._set_grad_enabled": "introspection"}


def test_the_guard_and_the_grader_use_exactly_the_tables_ids():
    guard_rules = set(GUARD.FORBIDDEN.values()) | set(GUARD.FORBIDDEN_PACKAGES.values())
    assert guard_rules == set(FORBIDDEN_API_RULES) == set(policy.GUARD_RULES)


def test_the_scanner_uses_the_tables_ids_and_its_own_only_for_what_the_guard_cannot_see():
    violations = {rule for rule, severity in RULES.items() if severity == VIOLATION}
    assert violations == set(FORBIDDEN_API_RULES.values()) | set(SCAN_ONLY_RULES)
    assert not set(SCAN_ONLY_RULES) & set(FORBIDDEN_API_RULES.values())
    assert {rule for _, rule, _ in API_RULES if rule is not ALLOWED} <= set(RULES)


def use_of(api: str, attribute: str, accessor: str | None) -> str:
    """A cell that uses a guarded API as a student would."""
    if accessor == "__get__":
        return f"t = torch.ones(1)\nt.{attribute}"
    if accessor == "__set__":
        return f"t = torch.ones(1)\nt.{attribute} = None"
    if api.startswith("torch.Tensor."):
        return f"t = torch.ones(1)\nt.{attribute}()"
    return f"{api}(x)"


def scan_rule_of(api: str, guard_rule: str) -> str:
    """The scanner's rule for a guarded API: the table's, but for the exceptions."""
    name = api.rpartition(".")[2].strip("_")
    if api.startswith(("torch.nn.", "torch._C._nn.")) and name in READY_MADE:
        return "ready-made-function"  # F.softmax, F.cross_entropy: the more specific of the scanner's rules
    return SCAN_REVIEWS.get(api, FORBIDDEN_API_RULES[guard_rule])


def test_every_api_the_guard_wraps_is_reported_by_the_scanner_under_the_same_rule():
    wrapped = list(GUARD.targets(GUARD.FORBIDDEN))
    assert len(wrapped) > 100  # torch.nn.functional.* and the other tables, as they exist in this torch
    found = {api: sorted({f.rule for f in scan(use_of(api, attribute, accessor))})
             for _, attribute, accessor, api, _ in wrapped}
    assert found == {api: [scan_rule_of(api, rule)] for _, _, _, api, rule in wrapped}


def test_every_torch_package_the_guard_forbids_is_forbidden_by_the_scanner_under_the_same_rule():
    for package, guard_rule in GUARD.FORBIDDEN_PACKAGES.items():
        assert (classify(f"{package}.anything") or ("",))[0] == FORBIDDEN_API_RULES[guard_rule], package


def guard_rule_for(name: str) -> str | None:
    """The guard's rule for a dotted torch name: its own row, its package's, or its module's package's."""
    module = getattr(_torch_object(name), "__module__", None) or ""
    for candidate in (name, module):
        for package, rule in GUARD.FORBIDDEN_PACKAGES.items():
            if candidate == package or candidate.startswith(package + "."):
                return rule
    return GUARD.FORBIDDEN.get(name, GUARD.FORBIDDEN.get(f"{name}.*"))


def _torch_object(name: str) -> object:
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return None


def test_every_torch_api_the_scanner_forbids_is_guarded_under_the_same_rule():
    scanner_torch_rows = {pattern.removesuffix(".**"): rule for pattern, rule, _ in API_RULES
                          if pattern.startswith("torch.") and rule in FORBIDDEN_API_RULES.values()}
    assert len(scanner_torch_rows) >= 8
    guarded = {name: FORBIDDEN_API_RULES.get(guard_rule_for(name) or "") for name in scanner_torch_rows}
    assert guarded == scanner_torch_rows


def test_every_ready_made_function_in_torch_is_guarded_as_ready_made_but_the_known_gaps():
    spellings = {f"{owner}.{prefix}{name}" for owner in ("torch", "torch.Tensor", "torch.special")
                 for name in READY_MADE for prefix in ("", "_")}
    existing = {name for name in spellings if _torch_object(name) is not None}
    assert {name for name in existing if GUARD.FORBIDDEN.get(name) != "ready-made"} == set()
    assert all(classify(name) == ("ready-made-function", name.rpartition(".")[2].strip("_")) for name in existing)
