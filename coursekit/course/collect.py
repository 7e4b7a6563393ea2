"""Collect submissions into nbgrader's `submitted/<student>/<assignment>/`, with nbgrader's `timestamp.txt`:
from a folder of cloned student repositories (`<prefix>-<username>/`, as GitHub Classroom's tooling
clones them; time of the last commit) or from an LMS download zip (Canvas names each file
`<name>_<userid>_<submissionid>_<original name>`; the pattern and time zone come from course.toml's
`[collect]`). Symlinks are never followed, a newer submission is never replaced by an older one,
and every skip is reported with its reason."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from coursekit.config import Course, LatePolicy
from coursekit.course.late import read_timestamp

MAX_NOTEBOOK_BYTES = 50 * 2**20
SAFE_STUDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"  # what nbgrader's own collect writes


@dataclass(frozen=True)
class Outcome:
    source: str
    student: str | None
    collected: bool
    why: str
    timestamp: datetime | None = None  # of a collected submission, naive UTC

    def __str__(self) -> str:
        verb = "collected" if self.collected else "skipped"
        return f"{verb:9}  {self.student or '?':20}  {self.source}: {self.why}"

    def late_by(self, policy: LatePolicy) -> str:
        """How late a collected submission is against the due date ("" if on time or within the grace
        period); an extension granted in the gradebook is counted when grading."""
        seconds = policy.seconds_late(self.timestamp) if self.collected else 0.0
        days = policy.days_late(seconds)
        if not days:
            return ""
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"LATE by {hours // 24} d {hours % 24} h {minutes} min ({days} day(s) started: {policy.describe()})"


@dataclass(frozen=True)
class Candidate:
    source: str
    student: str
    timestamp: datetime  # naive UTC, as nbgrader reads timestamp.txt
    content: bytes


def utc_text(moment: datetime) -> str:
    return moment.strftime(TIMESTAMP_FORMAT)


def store(course: Course, candidate: Candidate) -> Outcome:
    """Write one submission unless the one already collected is as new or newer."""
    if not SAFE_STUDENT.match(candidate.student):
        return Outcome(candidate.source, candidate.student, False, "not a usable student name")
    target = course.submission(candidate.student)
    if target.parent.is_symlink() or target.is_symlink():
        return Outcome(candidate.source, candidate.student, False, f"{target} is a symbolic link")
    if target.exists():
        current = read_timestamp(target)
        if current is None:
            return Outcome(candidate.source, candidate.student, False,
                           "the submission already collected has no timestamp.txt; remove it to replace it")
        if current >= candidate.timestamp:
            return Outcome(candidate.source, candidate.student, False,
                           f"the submission already collected ({utc_text(current)}) is as new or newer")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".collect-", dir=target.parent))
    (staging / course.notebook_name).write_bytes(candidate.content)
    (staging / "timestamp.txt").write_text(utc_text(candidate.timestamp) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return Outcome(candidate.source, candidate.student, True, f"submitted {utc_text(candidate.timestamp)}",
                   candidate.timestamp)


def collect(course: Course, candidates: list[Candidate | Outcome]) -> list[Outcome]:
    """Newest first, so that an older copy in the same batch is reported as skipped."""
    ready = sorted((c for c in candidates if isinstance(c, Candidate)), key=lambda c: c.timestamp, reverse=True)
    return [c for c in candidates if isinstance(c, Outcome)] + [store(course, c) for c in ready]


def find_notebook(repo: Path, name: str) -> Path | Outcome:
    """The shallowest regular file called `name` below repo, never through a symlink."""
    found: list[Path] = []
    links: list[Path] = []
    for directory, folders, files in os.walk(repo):  # os.walk does not descend into symlinked folders
        folders[:] = sorted(f for f in folders if f != ".git")
        for file in files:
            if file == name:
                (links if Path(directory, file).is_symlink() else found).append(Path(directory, file))
    if found:
        return min(found, key=lambda path: (len(path.relative_to(repo).parts), str(path)))
    why = f"{name} is a symbolic link; not followed" if links else f"no {name} in the repository"
    return Outcome(repo.name, None, False, why)


def commit_time(repo: Path, path: Path) -> datetime | None:
    """When the notebook was last committed (the committer's clock), naive UTC."""
    command = ["git", "-c", "core.fsmonitor=false", "-c", "safe.directory=*", "-C", str(repo),
               "log", "-1", "--format=%ct", "--", str(path.relative_to(repo))]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30)
    text = completed.stdout.strip()
    if completed.returncode != 0 or not text.isdigit():
        return None
    return datetime.fromtimestamp(int(text), timezone.utc).replace(tzinfo=None)


def read_capped(path: Path) -> bytes | None:
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return None
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as handle:
        return handle.read(MAX_NOTEBOOK_BYTES + 1)


def repo_candidate(course: Course, repo: Path, student: str) -> Candidate | Outcome:
    if repo.is_symlink() or not repo.is_dir():
        return Outcome(repo.name, student, False, "a symbolic link or not a folder; not followed")
    notebook = find_notebook(repo, course.notebook_name)
    if isinstance(notebook, Outcome):
        return Outcome(repo.name, student, False, notebook.why)
    when = commit_time(repo, notebook)
    if when is None:
        return Outcome(repo.name, student, False, f"no commit of {course.notebook_name} (not a git clone?)")
    content = read_capped(notebook)
    if content is None or len(content) > MAX_NOTEBOOK_BYTES:
        return Outcome(repo.name, student, False, f"the notebook is over {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    return Candidate(str(notebook.relative_to(repo.parent)), student, when, content)


def from_repositories(course: Course, folder: Path) -> list[Outcome]:
    """`folder/<prefix>-<username>/...`: one cloned repository per student."""
    prefix = course.settings.collect.repositories_prefix(course.assignment) + "-"
    candidates: list[Candidate | Outcome] = []
    for repo in sorted(folder.iterdir()):
        if repo.name.startswith("."):
            continue
        if not repo.name.startswith(prefix) or repo.name == prefix:
            candidates.append(Outcome(repo.name, None, False, f"not named {prefix}<username>"))
            continue
        candidates.append(repo_candidate(course, repo, repo.name[len(prefix):]))
    return collect(course, candidates)


def zip_candidate(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, pattern: re.Pattern, zone: ZoneInfo
) -> Candidate | Outcome:
    name = info.filename
    match = pattern.match(name)
    if "/" in name or "\\" in name:
        return Outcome(name, None, False, "inside a folder of the zip; LMS downloads are flat")
    if stat.S_ISLNK(info.external_attr >> 16):
        return Outcome(name, None, False, "a symbolic link; not followed")
    if not match or "student" not in match.groupdict():
        return Outcome(name, None, False, "does not match the LMS file name pattern ([collect] lms_pattern)")
    if not name.endswith(".ipynb"):
        return Outcome(name, match["student"], False, "not a notebook")
    if info.file_size > MAX_NOTEBOOK_BYTES:
        return Outcome(name, match["student"], False, f"over {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    with archive.open(info) as handle:
        content = handle.read(MAX_NOTEBOOK_BYTES + 1)
    if len(content) > MAX_NOTEBOOK_BYTES:
        return Outcome(name, match["student"], False, f"over {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    when = datetime(*info.date_time, tzinfo=zone).astimezone(timezone.utc).replace(tzinfo=None)
    return Candidate(name, match["student"], when, content)


def retire_examples(course: Course) -> list[str]:
    """The kit's example submissions (named as `coursekit examples` names them, and never collected: no
    timestamp.txt), removed from submitted/, autograded/, feedback/ and the gradebook, so that they
    never reach a real course's grades. `python -m coursekit examples` writes them again."""
    from coursekit.course.gradebook import remove_students  # imported here: it loads nbgrader and torch
    from coursekit.examples import EXAMPLES, MALFORMED

    retired = [name for name in (*EXAMPLES, MALFORMED[0])
               if course.submission(name).is_dir() and not (course.submission(name) / "timestamp.txt").exists()]
    for name in retired:
        for folder in course.student_folders(name):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
    remove_students(course, retired)
    return retired


def from_lms_zip(course: Course, path: Path) -> list[Outcome]:
    """An LMS's "download submissions" zip; the time is the zip entry's (the LMS's submission time)."""
    settings = course.settings.collect
    pattern, zone = re.compile(settings.lms_pattern), ZoneInfo(settings.lms_timezone)
    with zipfile.ZipFile(path) as archive:
        candidates = [zip_candidate(archive, info, pattern, zone) for info in archive.infolist() if not info.is_dir()]
    return collect(course, candidates)
