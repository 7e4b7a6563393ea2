"""The course: its folders (nbgrader's layout) and its settings, read once from `course.toml` and
validated against SCHEMA, the one place where every setting and its default is written. A misspelt
key or a value of the wrong type is an error at start-up, never a silent default."""
from __future__ import annotations

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


@dataclass(frozen=True)
class Settings:
    sections: dict[str, dict]

    @property
    def no_autograd(self) -> bool:
        return self.sections["policy"]["no_autograd"]

    @property
    def limits(self) -> Limits:
        given = self.sections["limits"]
        return Limits(memory_bytes=int(given["memory_gib"] * 2**30), notebook_seconds=given["notebook_seconds"],
                      cell_seconds=given["cell_seconds"], processes=given["processes"],
                      file_bytes=given["file_mib"] * 2**20, output_bytes=given["output_bytes"])

    @property
    def floors(self) -> Floors:
        return Floors(**self.sections["floors"])


def read_settings(path: Path) -> Settings:
    """The validated settings of course.toml at path (all defaults if there is none)."""
    try:
        raw = tomllib.loads(path.read_text()) if path.is_file() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return Settings(validated(raw, path.name))


@dataclass(frozen=True)
class Course:
    """A course folder in nbgrader's layout, with its course.toml read once (on first use)."""
    root: Path
    assignment: str = ASSIGNMENT

    @cached_property
    def settings(self) -> Settings:
        return read_settings(self.root / "course.toml")

    @property
    def notebook_name(self) -> str:
        return f"{self.assignment}.ipynb"

    @property
    def source_notebook(self) -> Path:
        return self.root / "source" / self.assignment / self.notebook_name

    @property
    def release_notebook(self) -> Path:
        return self.root / "release" / self.assignment / self.notebook_name

    def submission(self, student: str) -> Path:
        return self.root / "submitted" / student / self.assignment

    def students(self) -> list[str]:
        folder = self.root / "submitted"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
