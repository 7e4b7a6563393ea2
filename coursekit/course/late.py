"""Late work: the due date and policy from course.toml's `[late]`, submission times from nbgrader's
`timestamp.txt`. The penalty is in points, like nbgrader's `late_submission_penalty`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nbgrader.utils import parse_utc

from coursekit.config import validated

DAY_SECONDS = 24 * 3600
MAX_TIMESTAMP_BYTES = 100


@dataclass(frozen=True)
class LatePolicy:
    due: datetime | None = None        # naive UTC, as nbgrader stores it
    method: str = "none"
    percent_per_day: float = 0.0
    grace_seconds: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> LatePolicy:
        """From course.toml's sections; `[late]` is checked, and completed with the defaults, by config.py."""
        section = validated({"late": config.get("late", {})}, "course.toml")["late"]
        due = section["due"]
        return cls(
            due=parse_utc(str(due)) if due else None,
            method=section["policy"],
            percent_per_day=float(section["percent_per_day"]),
            grace_seconds=float(section["grace_minutes"]) * 60,
        )

    def seconds_late(self, timestamp: datetime | None) -> float:
        if timestamp is None or self.due is None:
            return 0.0
        return max(0.0, (timestamp - self.due).total_seconds())

    def days_late(self, seconds_late: float) -> int:
        """Whole days started after the due date; none within the grace period."""
        return 0 if seconds_late <= self.grace_seconds else math.ceil(seconds_late / DAY_SECONDS)

    def penalty(self, score: float, seconds_late: float) -> float:
        """Points taken off `score` (never more than the score itself, as nbgrader caps it)."""
        days = self.days_late(seconds_late)
        if days == 0 or self.method == "none":
            return 0.0
        fraction = 1.0 if self.method == "zero" else min(1.0, days * self.percent_per_day / 100)
        return round(max(0.0, score) * fraction, 2)

    def describe(self) -> str:
        if self.method == "zero":
            return "late work scores 0"
        if self.method == "percent_per_day":
            return f"{self.percent_per_day:g}% of the score per day started late"
        return "no late penalty"


def read_timestamp(submission: Path) -> datetime | None:
    """The submission time nbgrader would use (`timestamp.txt`), or None if absent or unreadable."""
    path = submission / "timestamp.txt"
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_TIMESTAMP_BYTES:
            return None
        text = path.read_text().strip()
        return parse_utc(text) if text else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def late_status(policy: LatePolicy, submission: Path, score: float) -> dict:
    """What results.json, the feedback and grades.csv show about lateness."""
    timestamp = read_timestamp(submission)
    seconds = policy.seconds_late(timestamp)
    return {"timestamp": timestamp.isoformat() if timestamp else None,
            "due": policy.due.isoformat() if policy.due else None,
            "seconds_late": round(seconds), "days_late": policy.days_late(seconds),
            "policy": policy.describe(), "penalty": policy.penalty(score, seconds)}
