"""coursekit collect: cloned student repositories and LMS zips into submitted/, with timestamp.txt."""
from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from coursekit.config import Course
from coursekit.course.collect import from_lms_zip, from_repositories
from coursekit.course.late import read_timestamp

NOTEBOOK = "classifier_from_scratch.ipynb"


@pytest.fixture
def course(tmp_path) -> Course:
    (tmp_path / "course").mkdir()
    return Course(tmp_path / "course")


def commit(repo: Path, text: str, when: str) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / NOTEBOOK).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_NAME": "s",
           "GIT_AUTHOR_EMAIL": "s@example.org", "GIT_COMMITTER_NAME": "s", "GIT_COMMITTER_EMAIL": "s@example.org"}
    for command in (["init", "-q"], ["add", NOTEBOOK], ["commit", "-q", "-m", "work"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env)


def outcomes_by_source(outcomes) -> dict[str, tuple[bool, str]]:
    return {o.source.split("/")[0]: (o.collected, o.why) for o in outcomes}


def test_repositories_are_collected_with_their_commit_time(course, tmp_path):
    repos = tmp_path / "repos"
    commit(repos / "classifier-from-scratch-alice", "alice v1", "2026-12-04T22:00:00+01:00")
    (repos / "classifier-from-scratch-bob").mkdir(parents=True)
    (repos / "classifier-from-scratch-bob" / NOTEBOOK).symlink_to(tmp_path / "secret.ipynb")
    (repos / "classifier-from-scratch-carol").symlink_to(repos / "classifier-from-scratch-alice")
    (repos / "classifier-from-scratch-dan").mkdir()
    (repos / "classifier-from-scratch-dan" / NOTEBOOK).write_text("never committed")
    (repos / "homework-erin").mkdir()
    outcomes = outcomes_by_source(from_repositories(course, repos))
    assert outcomes["classifier-from-scratch-alice"][0]
    assert (course.submission("alice") / NOTEBOOK).read_text() == "alice v1"
    assert read_timestamp(course.submission("alice")) == datetime(2026, 12, 4, 21, 0)
    assert "symbolic link" in outcomes["classifier-from-scratch-bob"][1]
    assert "symbolic link" in outcomes["classifier-from-scratch-carol"][1]
    assert "no commit" in outcomes["classifier-from-scratch-dan"][1]
    assert "not named classifier-from-scratch-<username>" in outcomes["homework-erin"][1]
    assert sorted(p.name for p in (course.root / "submitted").iterdir()) == ["alice"]


def test_an_older_submission_never_replaces_a_newer_one(course, tmp_path):
    newer, older = tmp_path / "newer", tmp_path / "older"
    commit(newer / "classifier-from-scratch-alice", "alice v2", "2026-12-05T10:00:00+00:00")
    commit(older / "classifier-from-scratch-alice", "alice v1", "2026-12-04T10:00:00+00:00")
    assert from_repositories(course, newer)[0].collected
    skipped = from_repositories(course, older)[0]
    assert not skipped.collected and "as new or newer" in skipped.why
    assert (course.submission("alice") / NOTEBOOK).read_text() == "alice v2"
    commit(older / "classifier-from-scratch-alice", "alice v3", "2026-12-06T10:00:00+00:00")
    assert from_repositories(course, older)[0].collected
    assert (course.submission("alice") / NOTEBOOK).read_text() == "alice v3"


def add(archive: zipfile.ZipFile, name: str, content: str, when=(2026, 12, 4, 12, 0, 0), mode=0o100644) -> None:
    info = zipfile.ZipInfo(name, date_time=when)
    info.external_attr = mode << 16
    archive.writestr(info, content)


def test_an_lms_zip_is_collected_newest_first_with_every_skip_explained(course, tmp_path):
    path = tmp_path / "submissions.zip"
    with zipfile.ZipFile(path, "w") as archive:
        add(archive, "doejane_1234_5678_classifier_from_scratch.ipynb", "jane old", when=(2026, 12, 3, 9, 0, 0))
        add(archive, "doejane_late_1234_5679_classifier_from_scratch-1.ipynb", "jane new", when=(2026, 12, 5, 9, 30, 0))
        add(archive, "roesam_42_77_notes.txt", "not a notebook")
        add(archive, "roesam_42_78_link.ipynb", "/etc/passwd", mode=stat.S_IFLNK | 0o777)
        add(archive, "folder/smithjo_7_8_classifier_from_scratch.ipynb", "nested")
        add(archive, "README.ipynb", "no pattern")
    outcomes = {o.source: o for o in from_lms_zip(course, path)}
    assert outcomes["doejane_late_1234_5679_classifier_from_scratch-1.ipynb"].collected
    assert "as new or newer" in outcomes["doejane_1234_5678_classifier_from_scratch.ipynb"].why
    assert (course.submission("1234") / NOTEBOOK).read_text() == "jane new"
    assert read_timestamp(course.submission("1234")) == datetime(2026, 12, 5, 9, 30)
    assert outcomes["roesam_42_77_notes.txt"].why == "not a notebook"
    assert "symbolic link" in outcomes["roesam_42_78_link.ipynb"].why
    assert "inside a folder" in outcomes["folder/smithjo_7_8_classifier_from_scratch.ipynb"].why
    assert "pattern" in outcomes["README.ipynb"].why
    assert sorted(p.name for p in (course.root / "submitted").iterdir()) == ["1234"]


def test_the_lms_pattern_and_time_zone_come_from_the_config(course, tmp_path):
    (course.root / "course.toml").write_text('[collect]\nlms_pattern = "^(?P<student>[a-z]+)--(?P<rest>.+)$"\n'
                                             'lms_timezone = "Europe/Paris"\n')
    path = tmp_path / "moodle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        add(archive, "jdoe--my notebook.ipynb", "jdoe", when=(2026, 7, 1, 12, 0, 0))
    assert from_lms_zip(course, path)[0].collected
    assert read_timestamp(course.submission("jdoe")) == datetime(2026, 7, 1, 10, 0)


def test_collect_says_which_submissions_are_late(course, tmp_path, capsys):
    from coursekit.cli import main

    (course.root / "course.toml").write_text('[late]\ndue = "2026-12-04 23:59:00 UTC"\npolicy = "percent_per_day"\n'
                                             'percent_per_day = 10\ngrace_minutes = 15\n')
    repos = tmp_path / "repos"
    commit(repos / "classifier-from-scratch-alice", "a", "2026-12-04T20:00:00+00:00")
    commit(repos / "classifier-from-scratch-bob", "b", "2026-12-05T00:10:00+00:00")    # within the grace period
    commit(repos / "classifier-from-scratch-erin", "e", "2026-12-06T10:00:00+00:00")
    assert main(["--root", str(course.root), "collect", str(repos)]) == 0
    lines = capsys.readouterr().out.splitlines()
    erin = next(line for line in lines if "erin" in line)
    assert erin.endswith("submitted 2026-12-06 10:00:00.000000 UTC; LATE by 1 d 10 h 1 min "
                         "(2 day(s) started: 10% of the score per day started late)")
    assert not any("LATE" in line for line in lines if "alice" in line or "bob" in line)
    assert lines[-1] == "3 collected (1 late: erin), 0 skipped"


def test_collect_keeps_the_kits_examples_out_of_a_real_course(course, tmp_path, capsys):
    from coursekit.cli import main

    for example in ("alice_complete", "frank_malformed"):
        (course.submission(example)).mkdir(parents=True)
        (course.submission(example) / NOTEBOOK).write_text("example")
        (course.root / "autograded" / example / "classifier_from_scratch").mkdir(parents=True)
    course.submission("bob_uses_autograd").mkdir(parents=True)  # a real student who happens to have an example's name
    (course.submission("bob_uses_autograd") / "timestamp.txt").write_text("2026-12-01 10:00:00 UTC")
    repos = tmp_path / "repos"
    commit(repos / "classifier-from-scratch-erin", "e", "2026-12-04T10:00:00+00:00")
    assert main(["--root", str(course.root), "collect", str(repos)]) == 0
    assert "Removed the kit's example submissions (alice_complete, frank_malformed)" in capsys.readouterr().out
    assert sorted(p.name for p in (course.root / "submitted").iterdir()) == ["bob_uses_autograd", "erin"]
    assert list((course.root / "autograded").iterdir()) == []


def test_collect_records_the_rosters_names_for_formgrader(course, tmp_path, capsys):
    from coursekit.cli import main
    from coursekit.course.gradebook import open_gradebook

    repos, roster = tmp_path / "repos", tmp_path / "roster.csv"
    commit(repos / "classifier-from-scratch-jdoe", "j", "2026-12-04T10:00:00+00:00")
    commit(repos / "classifier-from-scratch-zed", "z", "2026-12-04T10:00:00+00:00")
    roster.write_text('Student,ID,SIS User ID,SIS Login ID,Section\n"Doe, Jane",1234,S-01,jdoe,Lab A\n')
    assert main(["--root", str(course.root), "collect", str(repos), "--roster", str(roster)]) == 0
    assert (
        "Names from roster.csv recorded for 1 student(s); not found once in the roster: zed" in capsys.readouterr().out
    )
    with open_gradebook(course) as gradebook:
        jane = gradebook.find_student("jdoe")
        assert (jane.first_name, jane.last_name) == ("Jane", "Doe")
