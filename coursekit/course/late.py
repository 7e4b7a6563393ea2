"""Late work: submission times from nbgrader's `timestamp.txt`, against the due date and policy of
course.toml's `[late]` (`config.LatePolicy`, `course.settings.late`)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from nbgrader.utils import parse_utc

from coursekit.config import LatePolicy

MAX_TIMESTAMP_BYTES = 100


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
