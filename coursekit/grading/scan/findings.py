"""What the scanner reports: severities, rule ids, the :class:`Hit` a check
returns, the :class:`Finding` record, the :class:`ScanPolicy` knob and the
one-sentence messages shown to students.

A finding is keyed by (cell, line, rule): the walker keeps the first one in
walk order, and among the hits of one node it prefers a dotted name found in
the policy table (``named``) and then the check's name, so that the order of
the checks in the registry never decides which message is kept.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from coursekit.in_sandbox.protocol import FORBIDDEN_API_RULES

VIOLATION = "violation"
SUSPICIOUS = "suspicious"
UNPARSABLE = "unparsable"
SEVERITIES = (VIOLATION, SUSPICIOUS, UNPARSABLE)

#: rule id -> severity of its findings
#: violations of the forbidden-API policy that only the static scan looks for: the run-time guard wraps
#: torch, and fastai's training machinery and other libraries reach it through torch.nn and torch.optim
SCAN_ONLY_RULES = ("fastai-training", "ml-library")
RULES: dict[str, str] = {
    **{rule: VIOLATION for rule in FORBIDDEN_API_RULES.values()},
    **{rule: VIOLATION for rule in SCAN_ONLY_RULES},
    "dynamic-code": SUSPICIOUS,
    "file-access": SUSPICIOUS,
    "network": SUSPICIOUS,
    "process": SUSPICIOUS,
    "monkeypatch": SUSPICIOUS,
    "encoded-blob": SUSPICIOUS,
    "introspection": SUSPICIOUS,
    "syntax": UNPARSABLE,
}
MAX_LITERAL_CHARS = 2000  # a longer string or bytes literal in a cell may carry weights or data


@dataclass(frozen=True)
class Finding:
    severity: str  # "violation" | "suspicious" | "unparsable"
    rule: str  # one of RULES
    cell: int  # the cell index given by the caller
    line: int  # 1-based line within the cell's source, as the student wrote it
    message: str  # one sentence for the student
    check: str = ""  # the scanner check that produced it (a function of rules.py, "magics", "parse", ...)


@dataclass(frozen=True)
class Hit:
    """What a check found at one node; the walker turns it into a :class:`Finding` (cell, line, message)."""

    rule: str  # one of RULES
    node: Optional[ast.AST]  # where it is and what the message quotes, unless `line` and `spelled` say
    detail: str = ""
    spelled: Optional[str] = None
    line: Optional[int] = None  # the student's line; None: the node's
    named: bool = False  # a dotted name classified by the policy table (apis.API_RULES)
    check: str = ""  # set by rules.run_checks from the check's name, unless the check set it


@dataclass(frozen=True)
class ScanPolicy:
    no_autograd: bool = True  # when False the "autograd" rule is not reported


#: rule id -> message; ``{s}`` is the student's spelling, ``{d}`` the rule's detail
TEMPLATES = {
    "autograd": "`{s}` uses PyTorch autograd{d}, which this assignment forbids; "
                "compute the gradients by hand in your layers' backward().",
    "torch.nn": "`{s}` uses torch.nn{d} (ready-made layers, functions and "
                "initialisers), which is not allowed; build it yourself from tensor operations.",
    "torch.optim": "`{s}` uses a ready-made optimiser from torch.optim, which is not "
                   "allowed; update the parameters yourself in your training loop.",
    "ready-made-function": "`{s}` uses the ready-made `{d}`, which is not allowed; "
                           "use your own implementation built from tensor operations "
                           "(e.g. your own log_softmax).",
    "fastai-training": "`{s}` uses fastai's `{d}`, but fastai may only be used for the "
                       "provided data loading; write your own model, loss, optimiser "
                       "and training loop.",
    "ml-library": "`{s}` uses the `{d}` library, but other machine-learning libraries "
                  "are not allowed in this assignment.",
    "dynamic-code": "`{s}` {d}, so the checker cannot see what it really does; "
                    "a person will review it.",
    "file-access": "`{s}` {d}; a notebook should only use files inside the "
                   "assignment folder, so a person will review it.",
    "network": "`{s}` uses the network ({d}); the assignment must not download "
               "anything, so a person will review it.",
    "process": "`{s}` {d}; running other programs is not part of the assignment, "
               "so a person will review it.",
    "monkeypatch": "`{s}` replaces `{d}` from a library; the grader never scores with your "
                   "kernel's functions, but a person will review it.",
    "introspection": "`{s}` {d}: code that looks inside Python, torch or the grader can step around "
                     "the grader's checks, so a person will review it.",
}


def quote(text: str, limit: int = 70) -> str:
    """One line of the student's code, shortened, safe inside backticks."""
    text = " ".join(text.split()).replace("`", "'")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def message(rule: str, spelled: str, detail: str = "") -> str:
    return TEMPLATES[rule].format(s=quote(spelled), d=detail)


def syntax_message(error: str, syntax: bool) -> str:
    if syntax:
        return (f"This cell has a syntax error ({quote(error, 60)}) and cannot be "
                "checked; fix it so that the cell runs.")
    return (f"This cell could not be parsed ({quote(error, 60)}), so it cannot "
            "be checked automatically; a person will review it.")
