"""The late policy of course.toml's [late], read against nbgrader's timestamp.txt."""
from datetime import datetime

import pytest

from coursekit.config import LatePolicy, settings_of
from coursekit.course.late import late_status, read_timestamp

DUE = "2026-12-04 23:59:00 UTC"


def policy(**late) -> LatePolicy:
    return settings_of({"late": {"due": DUE, **late}}).late


def test_percent_per_day_counts_started_days_after_the_grace_period():
    late = policy(policy="percent_per_day", percent_per_day=10, grace_minutes=15)
    assert late.penalty(80, seconds_late=10 * 60) == 0            # within the grace period
    assert late.penalty(80, seconds_late=20 * 60) == 8            # first day started
    assert late.penalty(80, seconds_late=36 * 3600) == 16         # second day started
    assert late.penalty(80, seconds_late=30 * 86400) == 80        # never more than the score


def test_zero_and_none():
    assert policy(policy="zero").penalty(55.5, seconds_late=1) == 55.5
    assert policy(policy="none").penalty(55.5, seconds_late=86400 * 9) == 0
    assert settings_of({}).late.penalty(55.5, seconds_late=86400 * 9) == 0


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="percent_per_day"):
        policy(policy="half")


def test_timestamp_is_read_as_nbgrader_reads_it(tmp_path):
    (tmp_path / "timestamp.txt").write_text("2026-12-05 11:00:00.000000 CET\n")
    assert read_timestamp(tmp_path) == datetime(2026, 12, 5, 10, 0)
    status = late_status(policy(policy="percent_per_day", percent_per_day=25), tmp_path, 40)
    assert status["days_late"] == 1 and status["penalty"] == 10 and status["seconds_late"] == 36060


@pytest.mark.parametrize("content", ["", "yesterday", "x" * 500])
def test_an_unreadable_timestamp_means_no_time(tmp_path, content):
    (tmp_path / "timestamp.txt").write_text(content)
    assert read_timestamp(tmp_path) is None


def test_a_symlinked_timestamp_is_not_read(tmp_path):
    (tmp_path / "elsewhere.txt").write_text(DUE)
    (tmp_path / "timestamp.txt").symlink_to(tmp_path / "elsewhere.txt")
    assert read_timestamp(tmp_path) is None


def test_a_toml_date_time_is_a_due_date(tmp_path):
    from coursekit.config import Course

    (tmp_path / "course.toml").write_text("[late]\ndue = 2026-12-04T23:59:00Z\npolicy = 'zero'\n")
    written = Course(tmp_path).settings.late
    same = settings_of({"late": {"due": "2026-12-04 23:59:00 UTC"}}).late.due
    assert written.due == same == datetime(2026, 12, 4, 23, 59) and written.method == "zero"
