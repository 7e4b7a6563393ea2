"""The course: its folders (nbgrader's layout) and its settings, read once from `course.toml` and
validated against SCHEMA, the one place where every setting and its default is written. A misspelt
key or a value of the wrong type is an error at start-up, never a silent default."""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from dateutil import parser as date_parser

from coursekit import ASSIGNMENT

LATE_METHODS = ("none", "zero", "percent_per_day")
GRADESCOPE_VISIBILITY = ("visible", "after_due_date", "after_published", "hidden")
CANVAS_PATTERN = r"^(?P<name>[^_]+)(?:_[Ll][Aa][Tt][Ee])?_(?P<student>\d+)_(?P<submission>\d+)_(?P<filename>.+)$"


class ConfigError(ValueError):
    """course.toml is not valid; the message names the setting and what was expected."""


@dataclass(frozen=True)
class Setting:
    default: Any  # of type `kind` (validated() checks the values read against it)
    kind: type | tuple[type, ...]
    choices: tuple = ()
    positive: bool = False
    bounds: tuple[float, float] | None = None       # inclusive
    check: Callable[[object], str | None] | None = None  # what was expected, when the value is wrong


NUMBER = (int, float)
# Two defaults that differ in every field a due date must state: dateutil fills a missing field from
# its default, so "friday" or "2026-12-04" parse to different moments and are refused as incomplete.
DATE_DEFAULTS = (datetime(2000, 1, 1, 0, 0), datetime(2001, 2, 2, 1, 1))


def names_problem(value: object) -> str | None:
    """None for a non-empty list of column names."""
    good = isinstance(value, list) and value and all(isinstance(item, str) and item for item in value)
    return None if good else 'a list of column names, such as ["ID", "SIS Login ID"]'


def due_date_problem(value: object) -> str | None:
    """None when value names one moment (a TOML date-time, or text with a date and a time)."""
    if value == "" or isinstance(value, datetime):
        return None
    expected = 'a date and time such as "2026-12-04 23:59:00 UTC" (no zone means UTC), or "" for none'
    try:
        moments = {date_parser.parse(str(value), default=default) for default in DATE_DEFAULTS}
    except (ValueError, OverflowError):
        return expected
    return None if len(moments) == 1 else expected

SCHEMA: dict[str, dict[str, Setting]] = {
    "policy": {"no_autograd": Setting(True, bool)},
    "limits": {"memory_gib": Setting(4, NUMBER, positive=True),       # per submission, whole sandbox
               "notebook_seconds": Setting(300, int, positive=True),  # wall time for the whole notebook
               "cell_seconds": Setting(60, int, positive=True),       # wall time for one cell
               "processes": Setting(256, int, positive=True),         # processes and threads in the sandbox
               "file_mib": Setting(512, int, positive=True),          # largest file a submission may write
               "output_bytes": Setting(200_000, int, positive=True)}, # kept output per cell
    "floors": {"regression_mse": Setting(4.0, NUMBER, positive=True),  # test MSE at most this
               "logistic_accuracy": Setting(0.87, NUMBER, positive=True),
               "mlp_accuracy": Setting(0.90, NUMBER, positive=True)},
    "late": {"due": Setting("", (str, datetime), check=due_date_problem),  # read by nbgrader's parse_utc
             "policy": Setting("none", str, LATE_METHODS),
             "percent_per_day": Setting(0, NUMBER, bounds=(0, 100)),
             "grace_minutes": Setting(0, NUMBER, bounds=(0, float("inf")))},
    "collect": {"repo_prefix": Setting("", str),  # empty: the assignment's name with dashes
                "lms_pattern": Setting(CANVAS_PATTERN, str), "lms_timezone": Setting("UTC", str)},
    # roster columns that may hold a student's id (a Canvas user id from a zip, a username from a repository)
    "lms": {"canvas_match_columns": Setting(["ID", "SIS Login ID"], list, check=names_problem),
            "moodle_match_columns": Setting(["Email address", "ID number"], list, check=names_problem),
            "moodle_identifier": Setting("Email address", str),
            "canvas_column": Setting("", str),   # empty: the roster's column named like the assignment
            "moodle_column": Setting("", str)},  # empty: the assignment's id
    "gradescope": {"visibility": Setting("after_published", str, GRADESCOPE_VISIBILITY),  # of the graded checks
                   "output_format": Setting("text", str, ("text", "md")),
                   "leaderboard": Setting(False, bool),  # the models' test accuracy and MSE
                   "stdout_visibility": Setting("hidden", str, GRADESCOPE_VISIBILITY)},
}


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = int(SCHEMA["limits"]["memory_gib"].default * 2**30)
    notebook_seconds: int = SCHEMA["limits"]["notebook_seconds"].default
    cell_seconds: int = SCHEMA["limits"]["cell_seconds"].default
    processes: int = SCHEMA["limits"]["processes"].default
    file_bytes: int = SCHEMA["limits"]["file_mib"].default * 2**20
    output_bytes: int = SCHEMA["limits"]["output_bytes"].default


@dataclass(frozen=True)
class Floors:
    """What a trained model must reach for its points (the reference solution is well above)."""
    regression_mse: float = SCHEMA["floors"]["regression_mse"].default
    logistic_accuracy: float = SCHEMA["floors"]["logistic_accuracy"].default
    mlp_accuracy: float = SCHEMA["floors"]["mlp_accuracy"].default


def validated(raw: dict, source: str) -> dict[str, dict]:
    """Every section of SCHEMA with its defaults filled in; ConfigError for anything unknown or wrong."""
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}] (expected one of: {', '.join(SCHEMA)})")
    sections = {}
    for name, settings in SCHEMA.items():
        given = raw.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: {name} must be a section, [{name}]")
        unknown = sorted(set(given) - set(settings))
        if unknown:
            raise ConfigError(
                f"{source}: [{name}] {unknown[0]} is not a setting (expected one of: {', '.join(settings)})"
            )
        sections[name] = {key: checked(given.get(key, setting.default), setting, f"{source}: [{name}] {key}")
                          for key, setting in settings.items()}
    return sections


def checked(value: object, setting: Setting, where: str) -> object:
    kinds = setting.kind if isinstance(setting.kind, tuple) else (setting.kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = {bool: "true or false", int: "a whole number", str: "a string", list: "a list"}.get(
            kinds[0], "a number"
        )
        raise ConfigError(f"{where} = {value!r}: expected {expected}")
    problem = value_problem(value, setting)
    if problem:
        raise ConfigError(f"{where} = {value!r}: expected {problem}")
    return value


def value_problem(value: object, setting: Setting) -> str | None:
    """What was expected, for a value of the right type that the setting still refuses."""
    if setting.choices and value not in setting.choices:
        return f"one of {', '.join(map(repr, setting.choices))}"
    number = value if isinstance(value, (int, float)) else None
    if setting.positive and number is not None and not number > 0:
        return "a number above 0"
    if setting.bounds and number is not None and not setting.bounds[0] <= number <= setting.bounds[1]:
        low, high = setting.bounds
        return f"a number from {low:g}" + (f" to {high:g}" if high < float("inf") else " up")
    return setting.check(value) if setting.check else None


DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class LatePolicy:
    """`[late]`: the due date (naive UTC, as nbgrader stores it) and the penalty, in points, like
    nbgrader's `late_submission_penalty`."""
    due: datetime | None = None
    method: str = "none"
    percent_per_day: float = 0.0
    grace_seconds: float = 0.0

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


@dataclass(frozen=True)
class Collection:
    """`[collect]`: how submissions are found in student repositories and LMS zips."""
    repo_prefix: str = SCHEMA["collect"]["repo_prefix"].default  # "": see repositories_prefix
    lms_pattern: str = SCHEMA["collect"]["lms_pattern"].default
    lms_timezone: str = SCHEMA["collect"]["lms_timezone"].default

    def repositories_prefix(self, assignment: str) -> str:
        """What every student repository's name starts with, before `-<username>`."""
        return self.repo_prefix or assignment.replace("_", "-")


@dataclass(frozen=True)
class LmsColumns:
    """`[lms]`: which roster columns may hold a student's id, and the assignment's grade column ("": the
    roster's column named like the assignment for Canvas, the assignment's id for Moodle)."""
    canvas_match_columns: tuple[str, ...] = tuple(SCHEMA["lms"]["canvas_match_columns"].default)
    moodle_match_columns: tuple[str, ...] = tuple(SCHEMA["lms"]["moodle_match_columns"].default)
    moodle_identifier: str = SCHEMA["lms"]["moodle_identifier"].default
    canvas_column: str = SCHEMA["lms"]["canvas_column"].default
    moodle_column: str = SCHEMA["lms"]["moodle_column"].default

    def match_columns(self, lms: str) -> tuple[str, ...]:
        return self.canvas_match_columns if lms == "canvas" else self.moodle_match_columns

    def column(self, lms: str) -> str:
        return self.canvas_column if lms == "canvas" else self.moodle_column


@dataclass(frozen=True)
class Settings:
    """course.toml's sections as `validated` returns them, and each section as its typed record, built
    once on first use."""
    sections: dict[str, dict]

    @property
    def no_autograd(self) -> bool:
        return self.sections["policy"]["no_autograd"]

    @cached_property
    def limits(self) -> Limits:
        given = self.sections["limits"]
        return Limits(memory_bytes=int(given["memory_gib"] * 2**30), notebook_seconds=given["notebook_seconds"],
                      cell_seconds=given["cell_seconds"], processes=given["processes"],
                      file_bytes=given["file_mib"] * 2**20, output_bytes=given["output_bytes"])

    @cached_property
    def floors(self) -> Floors:
        return Floors(**self.sections["floors"])

    @cached_property
    def late(self) -> LatePolicy:
        from nbgrader.utils import parse_utc  # imported here: nbgrader takes seconds to load

        given = self.sections["late"]
        return LatePolicy(due=parse_utc(str(given["due"])) if given["due"] else None, method=given["policy"],
                          percent_per_day=float(given["percent_per_day"]),
                          grace_seconds=float(given["grace_minutes"]) * 60)

    @cached_property
    def collect(self) -> Collection:
        return Collection(**self.sections["collect"])

    @cached_property
    def lms(self) -> LmsColumns:
        given = self.sections["lms"]
        return LmsColumns(**{**given, "canvas_match_columns": tuple(given["canvas_match_columns"]),
                             "moodle_match_columns": tuple(given["moodle_match_columns"])})


def settings_of(raw: dict, source: str = "course.toml") -> Settings:
    """The validated settings of a parsed course.toml (ConfigError if anything is unknown or wrong)."""
    return Settings(validated(raw, source))


def read_settings(path: Path) -> Settings:
    """The validated settings of course.toml at path (all defaults if there is none)."""
    try:
        raw = tomllib.loads(path.read_text()) if path.is_file() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return settings_of(raw, path.name)


@dataclass(frozen=True)
class Course:
    """A course folder in nbgrader's layout, with its course.toml read once (on first use). Every path the
    kit reads or writes under the course folder is named here, once."""
    root: Path
    assignment: str = ASSIGNMENT

    @cached_property
    def settings(self) -> Settings:
        return read_settings(self.root / "course.toml")

    @property
    def notebook_name(self) -> str:
        return f"{self.assignment}.ipynb"

    @property
    def notebook_id(self) -> str:
        """nbgrader's name for the notebook: its file name without `.ipynb`."""
        return Path(self.notebook_name).stem

    @property
    def source_notebook(self) -> Path:
        return self.root / "source" / self.assignment / self.notebook_name

    @property
    def release_notebook(self) -> Path:
        return self.root / "release" / self.assignment / self.notebook_name

    def submission(self, student: str) -> Path:
        return self.root / "submitted" / student / self.assignment

    def submitted_notebook(self, student: str) -> Path:
        return self.submission(student) / self.notebook_name

    def students(self) -> list[str]:
        folder = self.root / "submitted"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def student_folders(self, student: str) -> tuple[Path, ...]:
        """Everything the course holds of one student: submitted/, autograded/ and feedback/<student>."""
        return tuple(self.root / top / student for top in ("submitted", "autograded", "feedback"))

    def autograded(self, student: str) -> Path:
        return self.root / "autograded" / student / self.assignment

    def results_file(self, student: str) -> Path:
        """The grader's results (Gradescope's schema, with our data in extra_data)."""
        return self.autograded(student) / "results.json"

    def executed_notebook(self, student: str) -> Path:
        """The notebook as the grader ran it (nbgrader's autograded notebook), or a stand-in."""
        return self.autograded(student) / self.notebook_name

    def all_results_files(self) -> list[Path]:
        """Every student's results file (also those merged from CI shards), by student."""
        return sorted((self.root / "autograded").glob(f"*/{self.assignment}/results.json"))

    def feedback(self, student: str) -> Path:
        return self.root / "feedback" / student / self.assignment

    def feedback_page(self, student: str) -> Path:
        """Where nbgrader's generate_feedback writes the page: the notebook's id, `.html`."""
        return self.feedback(student) / f"{self.notebook_id}.html"

    @property
    def grades_file(self) -> Path:
        return self.root / "grades.csv"

    @property
    def review_file(self) -> Path:
        return self.root / "autograded" / "review.csv"

    @property
    def class_summary(self) -> Path:
        return self.root / "feedback" / "class_summary.png"

    @property
    def gradebook_file(self) -> Path:
        """The SQLite gradebook when nbgrader_config.py names no other database."""
        return self.root / "gradebook.db"

    def lms_grades_file(self, lms: str) -> Path:
        return self.root / f"grades-{lms}.csv"

    @property
    def similarity_folder(self) -> Path:
        return self.root / "similarity"
