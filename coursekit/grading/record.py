"""The record of one submission on its way through the pipeline: each step reads what the steps
before it left here and adds its own part (see pipeline.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from coursekit.grading.execute import Execution
from coursekit.grading.policy import Violation
from coursekit.grading.sanitize import Sanitized
from coursekit.grading.scan import Finding
from coursekit.grading.score import PartResult


@dataclass
class ReviewItem:
    """Something a person should look at: a policy violation, or what the scan flags for review."""
    severity: str       # "violation" | "review"
    rule: str
    cell: int | None
    line: int | None
    code: str           # the line of the student's code, when known
    message: str
    grade_id: str | None = None  # the part whose points wait for the person, when there is one


@dataclass
class Submission:
    """One submission on its way through the pipeline."""
    student: str
    notebook: Path                                          # in the student's folder: read, never changed
    digest: str = ""                                        # of the folder, before grading
    clean: Sanitized | None = None                          # sanitize: rebuilt on the release's skeleton
    findings: list[Finding] = field(default_factory=list)   # scan
    execution: Execution | None = None                      # execute
    violations: list[Violation] = field(default_factory=list)  # apply_policy: what costs points
    uncosted: list[Violation] = field(default_factory=list)    # apply_policy: for review only
    parts: list[PartResult] = field(default_factory=list)   # score
    review: list[ReviewItem] = field(default_factory=list)  # list_review
    notes: list[str] = field(default_factory=list)          # remarks of every step, for the student
    failure: str | None = None                              # why nothing could be graded
    failure_rule: str | None = None                         # and the rule, when a person should look
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # each step's own time, by its name

    @property
    def folder(self) -> Path:
        return self.notebook.parent

    @property
    def executed(self) -> nbformat.NotebookNode | None:
        return self.execution.executed if self.execution else None

    @property
    def sandbox_seconds(self) -> float:
        return self.execution.completed.seconds if self.execution else 0.0

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.execution.completed.peak_memory_bytes if self.execution else None

    @property
    def score(self) -> float:
        return round(sum(p.score for p in self.parts if not p.pending), 2)

    @property
    def max_autograded(self) -> float:
        return sum(p.max_score for p in self.parts if not p.pending)
