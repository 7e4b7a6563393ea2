"""The CI workflows only run commands that exist: make targets, `coursekit` subcommands and options,
repository paths; the instructor workflow shards with the plan job's matrix and merges with `export`;
every workflow the project ships (generated bundles included) passes actionlint and zizmor."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from coursekit.cli import build_parser
from coursekit.config import Course

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTOR = ROOT / ".github" / "workflows" / "grade-submissions.yml"
WORKFLOWS = {"instructor": INSTRUCTOR}
TOOLS = Path(sys.executable).parent  # actionlint, shellcheck and zizmor come with requirements.txt

# `${{ ... }}` expressions are replaced by these values (anything else by a plain word) before parsing.
PLACEHOLDERS = {"matrix.shard": "1", "needs.plan.outputs.count": "2"}
# Paths that a fresh checkout need not contain: the grader reads or writes them, or the workflow does.
GRADER_PATHS = {"submitted", "autograded", "feedback", "grades.csv", "check.txt", "gradebook.db", "shards"}
OPERATORS = set(";&|()<>")
KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "!", "{", "}", "sudo", "time"}


# ---------------------------------------------------------------- reading workflows, scripts, Makefile

def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    if True in workflow:  # YAML 1.1 reads the key `on` as the boolean True
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict, job: str | None = None) -> list[dict]:
    jobs = [workflow["jobs"][job]] if job else workflow["jobs"].values()
    return [step for j in jobs for step in j.get("steps", [])]


def substitute(text: str) -> str:
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: PLACEHOLDERS.get(m.group(1), "PLACEHOLDER"), text)


def strip_comment(line: str) -> str:
    """Drop a shell comment: `#` at the start of a word, outside quotes (`${#a[@]}` is not one)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace() or line[i - 1] in OPERATORS):
            return line[:i]
    return line


def commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, as token lists (keywords, sudo and VAR=value prefixes removed)."""
    found = []
    for line in substitute(script).replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(strip_comment(line), posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, ""
        try:
            tokens = list(lexer)
        except ValueError as error:
            pytest.fail(f"cannot tokenize workflow line {line!r}: {error}")
        current: list[str] = []
        for token in tokens + [";"]:
            if set(token) <= OPERATORS:
                if current:
                    found.append(current)
                current = []
            elif current or (token not in KEYWORDS and not re.match(r"^\w+=", token)):
                current.append(token)
    return found


def make_calls(script: str) -> list[list[str]]:
    """The targets of each `make` command."""
    calls = []
    for command in commands(script):
        if Path(command[0]).name == "make":
            targets, skip = [], False
            for token in command[1:]:
                if skip:
                    skip = False
                elif token in {"-C", "-f", "-I", "-o", "-W"}:
                    skip = True
                elif not token.startswith("-") and "=" not in token:
                    targets.append(token)
            calls.append(targets)
    return calls


def coursekit_calls(script: str) -> list[list[str]]:
    """The arguments after `python -m coursekit` of each such command."""
    return [command[i + 1:] for command in commands(script)
            for i in range(1, len(command))
            if Path(command[0]).name.startswith("python") and command[i - 1:i + 1] == ["-m", "coursekit"]]


def scripts(workflow: dict, job: str | None = None) -> list[str]:
    """The `run:` scripts, with their step's `env:` values in place."""
    return [with_step_env(step) for step in steps(workflow, job) if "run" in step]


def makefile() -> tuple[set[str], dict[str, str], dict[str, list[str]]]:
    """(targets, variables, recipes) from the Makefile's `target: ...` and `NAME := value` lines."""
    targets, variables, recipes, current = set(), {}, {}, []
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t"):
            for target in current:
                recipes.setdefault(target, []).append(line.strip())
            continue
        if variable := re.match(r"^(\w+)\s*[:?+]?=\s*(.*)$", line):
            variables[variable.group(1)] = variable.group(2).strip()
            current = []
        elif rule := re.match(r"^([A-Za-z0-9_][A-Za-z0-9_.\-]*(?:\s+[A-Za-z0-9_][A-Za-z0-9_.\-]*)*)\s*::?(?!=)", line):
            current = rule.group(1).split()
            targets.update(current)
        elif line and not line.startswith("#"):
            current = []
    return targets, variables, recipes


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def parse_cli(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`python -m coursekit {' '.join(argv)}` is rejected by coursekit's CLI parser")


def all_make_calls(path: Path) -> list[list[str]]:
    return [call for script in scripts(load(path)) for call in make_calls(script)]


def all_coursekit_calls(path: Path) -> list[list[str]]:
    return [call for script in scripts(load(path)) for call in coursekit_calls(script)]


def step_index(workflow: dict, job: str, predicate) -> int:
    matches = [i for i, step in enumerate(steps(workflow, job)) if predicate(step)]
    assert matches, f"job {job}: no such step"
    return matches[0]


def needs(job: dict) -> list[str]:
    return [job["needs"]] if isinstance(job.get("needs"), str) else list(job.get("needs", []))


def with_step_env(step: dict) -> str:
    """The step's script with its `env:` values (expressions as placeholders) in place of `$NAME`/`${NAME}`."""
    script = step["run"]
    for name, value in step.get("env", {}).items():
        script = re.sub(rf"\$\{{?{name}\b\}}?", lambda _: substitute(str(value)), script)
    return script


def runs(pattern: str):
    return lambda step: re.search(pattern, step.get("run", "")) is not None


def uses(action: str):
    return lambda step: step.get("uses", "").split("@")[0] == action


# ---------------------------------------------------------------- the helpers themselves

def test_command_extraction():
    script = (
        "set -o pipefail  # comment: make nothing\nn=${#a[@]}; sudo make venv \\\n  sandbox data && echo '#x'\n"
        "X=1 .venv/bin/python -m coursekit --root . autograde -j 2 | tee out.txt\nmake -C sub -j2 test NB=x.ipynb"
    )
    assert make_calls(script) == [["venv", "sandbox", "data"], ["test"]]
    assert coursekit_calls(script) == [["--root", ".", "autograde", "-j", "2"]]
    assert ["tee", "out.txt"] in commands(script) and ["echo", "#x"] in commands(script)


# ---------------------------------------------------------------- both workflows

@pytest.mark.parametrize("name", WORKFLOWS)
def test_valid_yaml_with_triggers_and_jobs(name):
    workflow = load(WORKFLOWS[name])
    assert "push" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    assert workflow["jobs"]
    for job_name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest" and isinstance(job["timeout-minutes"], int), job_name
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{job_name}: {step}"
            if uses("actions/setup-python")(step):
                assert step["with"] == {"python-version": "3.11"} and step["id"] == "python"


VENV_KEY = (
    "venv-${{ runner.os }}-py${{ steps.python.outputs.python-version }}"
    "-${{ hashFiles('requirements.txt', 'constraints.txt') }}"
)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_job_with_python_reuses_the_environment(name):
    """Restored from the cache until the pins or Python change; installed (CPU build first) only on a miss."""
    workflow = load(WORKFLOWS[name])
    for job in (j for j in workflow["jobs"] if any(uses("actions/setup-python")(s) for s in steps(workflow, j))):
        cache_at = step_index(workflow, job, lambda s: uses("actions/cache")(s) and s["with"]["path"] == ".venv")
        cache = steps(workflow, job)[cache_at]
        assert cache["with"]["key"] == VENV_KEY and cache["id"] == "venv"
        install_at = step_index(workflow, job, runs(r"install_env\.py"))
        install = steps(workflow, job)[install_at]
        assert install["if"] == "steps.venv.outputs.cache-hit != 'true'"
        assert commands(install["run"]) == [["python", "-m", "venv", ".venv"],
                                            [".venv/bin/python", "coursekit/platforms/install_env.py", "."]]
        assert step_index(workflow, job, uses("actions/setup-python")) < cache_at < install_at
        assert install_at < step_index(workflow, job, runs(r"\bmake venv\b"))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_artifacts_can_be_uploaded_again_when_a_job_is_rerun(name):
    workflow = load(WORKFLOWS[name])
    uploads = [step for step in steps(workflow) if uses("actions/upload-artifact")(step)]
    assert uploads and all(step["with"]["overwrite"] is True for step in uploads)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_make_targets_exist(name):
    targets, _, _ = makefile()
    calls = all_make_calls(WORKFLOWS[name])
    assert ["venv", "sandbox", "data"] in calls
    for call in calls:
        assert call, "a bare `make` runs the Makefile's first target; name the targets"
        for target in call:
            assert target in targets, f"{WORKFLOWS[name].name} runs `make {target}`: no such Makefile target"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_coursekit_commands_exist(name):
    calls = all_coursekit_calls(WORKFLOWS[name])
    assert calls
    known = subcommands(build_parser())
    for argv in calls:
        command = next(token for token in argv if not token.startswith("-") and token != ".")
        assert command in known, f"`coursekit {command}` is not a subcommand ({', '.join(known)})"
        assert parse_cli(argv).command == command


def referenced_paths(workflow: dict) -> set[str]:
    """Relative paths named in scripts (words with a `/` or a file extension), action `path`s and push paths."""
    found = set((workflow["on"].get("push") or {}).get("paths", []))
    for step in steps(workflow):
        for key in ("path", "cache-dependency-path"):
            found.update(line.strip() for line in str(step.get("with", {}).get(key, "")).splitlines())
        for call in re.findall(r"hashFiles\(([^)]*)\)", str(step.get("with", {}).get("key", ""))):
            found.update(re.findall(r"'([^']+)'", call))
    for script in scripts(workflow):
        for command in commands(script):
            found.update(token for token in command
                         if re.fullmatch(r"[A-Za-z_][\w.*-]*(/[\w.*-]*)*", token)
                         and ("/" in token or re.search(r"\.(csv|txt|ipynb|json|toml|png|html|py)$", token)))
    return {path for path in found if path and path != "." and not path.startswith("~")}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_referenced_paths_exist(name):
    paths = referenced_paths(load(WORKFLOWS[name]))
    assert {"requirements.txt", "constraints.txt"} <= paths
    for path in paths:
        fixed = path.split("*")[0].rstrip("/")  # the part before any glob
        assert (ROOT / fixed).exists() or fixed.split("/")[0] in GRADER_PATHS, \
            f"{WORKFLOWS[name].name} names {path}: not in the repository, not written by the grader"


def test_venv_python_is_the_makefiles():
    """Every Python command runs the Makefile's venv, but the one that makes it."""
    _, variables, _ = makefile()
    venv = variables["VENV"]
    for path in WORKFLOWS.values():
        for script in scripts(load(path)):
            for command in commands(script):
                if Path(command[0]).name.startswith("python") and command != ["python", "-m", "venv", venv]:
                    assert command[0] == variables["PY"].replace("$(VENV)", venv)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_bubblewrap_installed_before_grading(name):
    workflow = load(WORKFLOWS[name])
    job = next(j for j in workflow["jobs"] if any(call[:1] in (["autograde"], ["check"])
                                                  for s in scripts(workflow, j) for call in coursekit_calls(s)))
    install = step_index(workflow, job, runs(r"sudo apt-get install -y bubblewrap"))
    sysctl = step_index(workflow, job, runs(r"kernel\.apparmor_restrict_unprivileged_userns=0"))
    setup = step_index(workflow, job, runs(r"\bmake venv sandbox data\b"))
    grade = step_index(workflow, job, runs(r"-m coursekit (autograde|check)\b"))
    assert install <= sysctl < grade and install < setup < grade
    mnist = step_index(workflow, job, lambda s: uses("actions/cache")(s) and s["with"]["path"] == "~/.fastai/data")
    assert steps(workflow, job)[mnist]["with"] == {"path": "~/.fastai/data", "key": "mnist-png-v1"}


# ---------------------------------------------------------------- instructor workflow

def test_instructor_triggers():
    """A push that changes what grading reads (a submission, the source notebook, course.toml) grades the class
    again, one that changes only what grading writes does not, and a push sizes the shards as a dispatch does."""
    on, course = load(INSTRUCTOR)["on"], Course(ROOT)

    def triggers(path: Path) -> bool:
        return any(fnmatch.fnmatch(str(path.relative_to(ROOT)), pattern) for pattern in on["push"]["paths"])
    reads = [course.submitted_notebook("alice"), course.submission("alice") / "timestamp.txt", course.source_notebook,
             ROOT / "course.toml"]
    writes = [course.results_file("alice"), course.feedback_page("alice"), course.grades_file, course.review_file]
    assert [path for path in reads if not triggers(path)] == [] and [path for path in writes if triggers(path)] == []
    default = on["workflow_dispatch"]["inputs"]["per_shard"]["default"]
    assert plan_step()["env"]["PER_SHARD"] == f"${{{{ inputs.per_shard || {default} }}}}"


def plan_step() -> dict:
    workflow = load(INSTRUCTOR)
    outputs = workflow["jobs"]["plan"]["outputs"]
    ids = {m.group(1) for value in outputs.values() for m in [re.search(r"steps\.([\w-]+)\.outputs\.", value)]}
    assert len(ids) == 1
    return next(step for step in steps(workflow, "plan") if step.get("id") in ids)


def test_grade_job_shards_with_the_plan_matrix():
    workflow = load(INSTRUCTOR)
    plan, grade = workflow["jobs"]["plan"], workflow["jobs"]["grade"]
    assert "plan" in needs(grade)
    assert grade["strategy"]["fail-fast"] is False and grade["timeout-minutes"] == 60
    matrix = re.fullmatch(
        r"\$\{\{\s*fromJSON\(needs\.plan\.outputs\.(\w+)\)\s*\}\}", grade["strategy"]["matrix"]["shard"]
    )
    assert matrix and matrix.group(1) in plan["outputs"]
    assert "count" in plan["outputs"]
    for key, value in plan["outputs"].items():
        assert re.fullmatch(rf"\$\{{\{{\s*steps\.{plan_step()['id']}\.outputs\.{key}\s*\}}\}}", value)
        assert f"echo \"{key}=" in plan_step()["run"]
    (autograde,) = [s for s in steps(workflow, "grade") if coursekit_calls(s.get("run", ""))]
    assert autograde["env"] == {"SHARD": "${{ matrix.shard }}", "SHARDS": "${{ needs.plan.outputs.count }}"}
    (argv,) = coursekit_calls(with_step_env(autograde))
    args = parse_cli(argv)
    assert args.command == "autograde" and args.require_sandbox and args.students == []
    assert args.shard == "1/2"  # the placeholders of matrix.shard and needs.plan.outputs.count
    upload = steps(workflow, "grade")[step_index(workflow, "grade", uses("actions/upload-artifact"))]
    assert upload["if"] == "always()" and upload["with"]["name"] == "graded-${{ matrix.shard }}"
    assert set(upload["with"]["path"].split()) == {"autograded/", "feedback/"}
    uploads = [step["with"] for step in steps(workflow, "grade") if uses("actions/upload-artifact")(step)]
    assert {"name": "gradebook-${{ matrix.shard }}", "path": "gradebook.db"}.items() <= uploads[-1].items()


def run_plan(tmp_path: Path, students: int | None, per_shard: str, pipefail: bool) -> tuple[int, dict]:
    if students is not None:
        (tmp_path / "submitted").mkdir()
        for i in range(students):
            (tmp_path / "submitted" / f"student{i:04d}" / "classifier_from_scratch").mkdir(parents=True)
        (tmp_path / "submitted" / "notes.txt").write_text("not a student folder")
    output = tmp_path / "github_output"
    output.write_text("")
    shell = ["bash", "--noprofile", "--norc", "-eo", "pipefail"] if pipefail else ["bash", "-e"]
    result = subprocess.run([*shell, "-c", plan_step()["run"]], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PER_SHARD": per_shard, "GITHUB_OUTPUT": str(output)})
    return result.returncode, dict(line.split("=", 1) for line in output.read_text().splitlines())


@pytest.mark.parametrize("pipefail", [False, True], ids=["default-shell", "shell-bash"])
@pytest.mark.parametrize("students, per_shard, count", [
    (None, "25", 1), (0, "25", 1), (1, "25", 1), (25, "25", 1), (26, "25", 2), (99, "10", 10), (1000, "25", 20),
    (7, "1", 7)])
def test_plan_sizes_the_shards(tmp_path, students, per_shard, count, pipefail):
    code, outputs = run_plan(tmp_path, students, per_shard, pipefail)
    assert code == 0
    assert json.loads(outputs["shards"]) == list(range(1, count + 1)) and outputs["count"] == str(count)


@pytest.mark.parametrize("per_shard", ["0", "-3", "x", ""])
def test_plan_rejects_a_bad_shard_size(tmp_path, per_shard):
    code, outputs = run_plan(tmp_path, 3, per_shard, pipefail=False)
    assert code != 0 and not outputs


def test_plan_default_matches_the_dispatch_input():
    default = load(INSTRUCTOR)["on"]["workflow_dispatch"]["inputs"]["per_shard"]["default"]
    assert re.fullmatch(rf"\$\{{\{{\s*inputs\.per_shard \|\| {default}\s*\}}\}}", plan_step()["env"]["PER_SHARD"])


def test_merge_job_exports_after_downloading_every_shard():
    workflow = load(INSTRUCTOR)
    merge = workflow["jobs"]["merge"]
    assert "grade" in needs(merge) and "always()" in merge["if"]
    download_at = step_index(workflow, "merge", uses("actions/download-artifact"))
    download = steps(workflow, "merge")[download_at]["with"]
    assert download["merge-multiple"] is True and download["path"] == "."
    shard_name = substitute(steps(workflow, "grade")[step_index(workflow, "grade", uses("actions/upload-artifact"))]
                            ["with"]["name"])
    assert fnmatch.fnmatch(shard_name, download["pattern"]) and download["pattern"] == "graded-*"
    assert not fnmatch.fnmatch("grades", download["pattern"])  # the merged artifact is not re-downloaded
    export_at = step_index(
        workflow, "merge", lambda s: any(c[:1] == ["export"] for c in coursekit_calls(s.get("run", "")))
    )
    assert download_at < export_at
    gradebooks_at = step_index(workflow, "merge", lambda s: uses("actions/download-artifact")(s)
                               and s["with"]["pattern"] == "gradebook-*")
    merge_at = step_index(
        workflow, "merge", lambda s: any(c[:1] == ["merge-gradebooks"] for c in coursekit_calls(s.get("run", "")))
    )
    gradebooks = steps(workflow, "merge")[gradebooks_at]["with"]
    assert gradebooks_at < merge_at < export_at and "merge-multiple" not in gradebooks  # one folder per shard
    assert f"{gradebooks['path']}/gradebook-*/gradebook.db" in steps(workflow, "merge")[merge_at]["run"]
    assert not fnmatch.fnmatch(shard_name, gradebooks["pattern"]) and not fnmatch.fnmatch(
        "grades", gradebooks["pattern"]
    )
    assert ["venv"] in [c for s in scripts(workflow, "merge") for c in make_calls(s)]
    upload_at = step_index(workflow, "merge", uses("actions/upload-artifact"))
    upload = steps(workflow, "merge")[upload_at]["with"]
    assert export_at < upload_at and upload["name"] == "grades"
    assert set(upload["path"].split()) == {"grades.csv", "gradebook.db", "feedback/", "autograded/review.csv",
                                           "autograded/*/*/results.json"}
    summary_at = step_index(workflow, "merge", runs(r"GITHUB_STEP_SUMMARY"))
    assert export_at < summary_at and "grades.csv" in steps(workflow, "merge")[summary_at]["run"]


def test_export_merges_the_shards_layout(tmp_path):
    """What `merge` uploads and `export` reads agree with what the grader writes
    (autograded/<student>/<assignment>/)."""
    from coursekit import ASSIGNMENT
    from coursekit.cli import main
    from coursekit.config import Course

    for student, score in [("alice", 3), ("bob", 1)]:  # as downloaded from two shards' artifacts
        folder = tmp_path / "autograded" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(
            {"score": score, "tests": [{"name": "Part 1: q1", "score": score, "max_score": 3}], "extra_data": {}}))
        (tmp_path / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
    assert Course(tmp_path).students() == ["alice", "bob"]
    assert main(["--root", str(tmp_path), "export"]) == 0
    uploaded = steps(load(INSTRUCTOR), "merge")[step_index(load(INSTRUCTOR), "merge", uses("actions/upload-artifact"))]
    for pattern in set(uploaded["with"]["path"].split()) - {"gradebook.db"}:  # merge-gradebooks': tests/test_merge.py
        assert list(tmp_path.glob(pattern.rstrip("/"))), f"the grades artifact's {pattern} matches nothing"
    assert len(list(tmp_path.glob("autograded/*/*/results.json"))) == 2
    rows = (tmp_path / "grades.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["student", "alice", "bob"]
    assert (tmp_path / "feedback" / "class_summary.png").is_file()


# ---------------------------------------------------------------- every shipped workflow: pins, credentials, linters

USES = re.compile(r"^\s*(?:-\s+)?uses:\s*([^@\s]+)@(\S+)(?:\s+#\s*(.*))?$")


@pytest.fixture(scope="module")
def shipped_workflows(tmp_path_factory) -> list[Path]:
    """The repository's workflows and any inside the bundles `coursekit classroom50` and `gradescope` write."""
    from coursekit.config import Course
    from coursekit.platforms.classroom50 import write_bundle
    from coursekit.platforms.gradescope import write_zip

    out = tmp_path_factory.mktemp("bundles")
    write_bundle(Course(ROOT), out / "classroom50")
    with zipfile.ZipFile(write_zip(Course(ROOT), out / "gradescope.zip")) as archive:
        archive.extractall(out / "gradescope")
    found = sorted(ROOT.glob(".github/workflows/*.y*ml")) + sorted(out.glob("**/.github/workflows/*.y*ml"))
    assert INSTRUCTOR in found
    return found


def test_actions_are_pinned_to_a_commit_with_their_version(shipped_workflows):
    pins = {}
    for path in shipped_workflows:
        for line in path.read_text().splitlines():
            if match := USES.match(line):
                action, ref, comment = match.groups()
                assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {action} is not pinned to a commit"
                assert comment and re.fullmatch(r"v\d+\.\d+\.\d+", comment), f"{path.name}: {action} names no version"
                assert pins.setdefault(action, (ref, comment)) == (ref, comment), f"{action} is pinned twice"
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact"} <= set(pins)


def test_checkouts_keep_no_credentials_and_runs_expand_no_expressions(shipped_workflows):
    for path in shipped_workflows:
        for step in steps(load(path)):
            if uses("actions/checkout")(step):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {step}"
            assert "${{" not in step.get("run", ""), f"{path.name}: pass values to `run:` through `env:`: {step}"


def lint(tool: str, *args: str) -> subprocess.CompletedProcess:
    assert (TOOLS / tool).is_file(), f"{tool} is missing: install requirements.txt"
    return subprocess.run([str(TOOLS / tool), *args], capture_output=True, text=True)


def actionlint(paths: list[Path]) -> subprocess.CompletedProcess:
    return lint("actionlint", "-no-color", "-shellcheck", str(TOOLS / "shellcheck"), *map(str, paths))


def zizmor(paths: list[Path]) -> subprocess.CompletedProcess:
    return lint("zizmor", "--offline", "--no-progress", "--persona=auditor", *map(str, paths))


def by_major_version(path: Path, dest: Path) -> Path:
    """A copy with each pinned action named by its major version (`@v7`): actionlint knows the inputs and
    the runtime of a version, not of a commit."""
    copy = dest / path.parent.parent.parent.name / ".github" / "workflows" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(re.sub(r"@[0-9a-f]{40}\s+#\s*(v\d+)\S*", r"@\1", path.read_text()))
    return copy


def test_actionlint_finds_nothing(shipped_workflows, tmp_path):
    majors = [by_major_version(path, tmp_path) for path in shipped_workflows]
    assert all("@v" in copy.read_text() for copy in majors)
    result = actionlint(shipped_workflows + majors)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing(shipped_workflows):
    result = zizmor(shipped_workflows)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_the_linters_catch_what_the_issue_reported(tmp_path):
    """Node 20 actions, unpinned actions, persisted credentials, an expression inside `run:`."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("name: bad\non: push\npermissions: {}\njobs:\n  job:\n    name: job\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - uses: actions/checkout@v4\n"
                   "      - run: echo \"${{ github.event.head_commit.message }}\"\n")
    found = actionlint([bad])
    assert found.returncode != 0 and 'runtime "node20" is deprecated' in found.stdout
    found = zizmor([bad])
    assert found.returncode != 0
    for audit in ("unpinned-uses", "artipacked", "template-injection"):
        assert audit in found.stdout, audit


# ---------------------------------------------------------------- CI entry point

def test_ci_run_calls_the_makefiles_test_target():
    targets, _, recipes = makefile()
    assert make_calls((ROOT / ".ci" / "run").read_text()) == [["test"]]
    assert "test" in targets and any("-m pytest" in line for line in recipes["test"])
