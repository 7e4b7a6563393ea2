"""The Classroom 50 bundle and the Gradescope zip: what they contain (no solutions), how our results.json
maps to each platform's format, and (slow) the whole run of each, as the platform lays it out."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from coursekit.cli import build_parser
from coursekit.config import Course
from coursekit.grading.pipeline import run_steps
from coursekit.grading.record import Submission
from coursekit.grading.report import results_json
from coursekit.grading.rubric import GradedCell, Rubric, load_rubric
from coursekit.platforms import TEMPLATES, classroom50, find_notebook, gradescope

ROOT = Path(__file__).resolve().parent.parent
COURSE = Course(ROOT)
# The venv by its real path: the sandbox makes the resolved venv visible, not a symlink leading to it.
VENV_PYTHON = Path(sys.prefix).resolve() / "bin" / "python"
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$")
RUNNER_ENV = {  # what Classroom 50's runner sets, and the Actions variables it passes through
    "CLASSROOM": "ml-2026", "ASSIGNMENT": "classifier-from-scratch", "ASSIGNMENT_TYPE": "individual",
    "OWNER": "alice-s", "USERNAME": "alice-s", "SUBMISSION_TAG": "submit/2026-11-23T10-00-00Z-abc1234",
    "COMMIT_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/commit/abc1234",
    "RELEASE_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/releases/tag/submit%2Fx",
    "REVIEW_URL": "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s/compare/base...abc1234",
    "GITHUB_REPOSITORY": "ml-org/ml-2026-classifier-from-scratch-alice-s", "GITHUB_REPOSITORY_OWNER": "ml-org",
    "GITHUB_ACTOR": "alice-s", "GITHUB_ACTOR_ID": "4242", "GITHUB_SHA": "abc1234", "GITHUB_SERVER_URL": "https://github.com",
}
IDENTITY = {"classroom": "CLASSROOM", "assignment": "ASSIGNMENT", "assignment_type": "ASSIGNMENT_TYPE",
            "owner": "OWNER", "submission": "SUBMISSION_TAG", "commit": "COMMIT_URL", "release": "RELEASE_URL",
            "review": "REVIEW_URL"}


def our_results(*tests: tuple[str, float, float]) -> dict:
    """A results.json as the grader writes it (report.results_json's fields)."""
    return {"score": sum(score for _, score, _ in tests), "execution_time": 12.5, "output": "Autograded score: ...",
            "tests": [{"name": f"Part 1: {name}", "score": score, "max_score": points, "output": f"PASS  {name}",
                       "status": "passed" if score >= points else "failed", "tags": ["Part 1"], "visibility": "visible"}
                      for name, score, points in tests]}


# ---------------------------------------------------------------- what a bundle contains

def notebooks(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.ipynb"))


def assert_release_stands_in_for_source(course_folder: Path):
    bundled = Course(course_folder)
    assert bundled.source_notebook.read_bytes() == COURSE.release_notebook.read_bytes()
    assert load_rubric(bundled.source_notebook) == load_rubric(COURSE.source_notebook)
    for path in notebooks(course_folder):
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


def squeezed(text: str) -> str:
    """Whitespace and quote style do not make a line another line."""
    return re.sub(r"\s+", "", text).replace("'", '"')


def solution_lines() -> set[str]:
    """The distinctive lines the source notebook's solution regions add (as tests/test_assignment.py's
    release check takes them: over 15 characters, not also written outside a solution region)."""
    region = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
    cells = nbformat.read(COURSE.source_notebook, as_version=4).cells
    provided = squeezed("\n".join(region.sub("", cell.source) for cell in cells))
    lines = {squeezed(line) for cell in cells for answer in region.findall(cell.source) for line in answer.splitlines()
             if len(line.strip()) > 15 and not line.strip().startswith("#")}
    return {line for line in lines if line not in provided}


def readable_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    return path.read_bytes().decode("utf-8", "replace")


def leaks(folder: Path) -> dict[str, list[str]]:
    """Every bundled file (any kind) that holds a solution line: its path in the bundle -> those lines."""
    lines = solution_lines()
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = squeezed(readable_text(path))
        if hits := sorted(line for line in lines if line in text):
            found[str(path.relative_to(folder))] = hits
    return found




@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Each bundle as the platform unpacks it: Gradescope's zip, Classroom 50's public part (both ways)."""
    out = tmp_path_factory.mktemp("bundles")
    gradescope_zip = gradescope.write_zip(COURSE, out / "autograder.zip")
    return {
        "gradescope": unzip(gradescope_zip, out / "gradescope") / "course",
        "classroom50": classroom50.write_bundle(COURSE, out / "c50") / "course",
        "classroom50 --public-checks": classroom50.write_bundle(COURSE, out / "c50-public", public_checks=True)
        / "course",
    }


def test_there_are_solution_lines_to_look_for():
    assert len(solution_lines()) > 50


@pytest.mark.parametrize("name", ["gradescope", "classroom50", "classroom50 --public-checks"])
def test_no_bundled_file_holds_a_solution_line(bundles, name):
    assert_release_stands_in_for_source(bundles[name])
    assert leaks(bundles[name].parent) == {}
    assert not (bundles[name] / "coursekit" / "examples.py").exists()  # AUTOGRAD_TRAIN: a whole training loop


def coursekit_imports(module: Path) -> set[str]:
    """The coursekit modules a file imports when it is imported (not those its functions import later)."""
    import ast

    names, pending = set(), list(ast.parse(module.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.If, ast.Try)):
            pending += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
            pending += [child for handler in getattr(node, "handlers", []) for child in handler.body]
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("coursekit"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("coursekit"))
    return names


@pytest.mark.parametrize("name", ["gradescope", "classroom50"])
def test_every_module_a_bundled_module_imports_is_bundled(bundles, name):
    course = bundles[name]
    private = json.loads((course / "bundle.json").read_text()).get("private", []) if name == "classroom50" else []
    present = {str(p.relative_to(course).with_suffix("")).replace("/", ".") for p in course.rglob("*.py")}
    present |= {f"coursekit.{m[:-3]}".replace("/", ".") for m in private}
    present |= {m[:-len(".__init__")] for m in present if m.endswith(".__init__")}
    missing = {f"{p.relative_to(course)}: {m}" for p in course.rglob("*.py") for m in coursekit_imports(p)
               if m not in present}
    assert not missing


def test_the_leak_check_catches_a_real_solution_line(tmp_path):
    """Planted in a module and in a notebook, re-indented and with the other quotes, it is found."""
    line = sorted(solution_lines())[0]
    original = next(raw for cell in nbformat.read(COURSE.source_notebook, as_version=4).cells
                    for raw in cell.source.splitlines() if squeezed(raw) == line)
    module = tmp_path / "course" / "coursekit" / "grading" / "helper.py"
    module.parent.mkdir(parents=True)
    module.write_text(f"def helper():\n        {original.strip().replace(chr(34), chr(39))}\n")
    notebook = tmp_path / "course" / "extra.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"if True:\n  {original.strip()}")]),
                   notebook)
    assert leaks(tmp_path) == {"course/coursekit/grading/helper.py": [line], "course/extra.ipynb": [line]}


def test_classroom50_bundle(tmp_path):
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "autograder.py", "course", "private", "runtime.json"]
    assert json.loads((out / "runtime.json").read_text()) == {"runs-on": ["self-hosted", "coursekit"]}
    assert (out / "course" / "coursekit" / "platforms" / "classroom50.py").is_file()
    assert not (out / "course" / "coursekit" / "platforms" / "gradescope.py").exists()
    assert not list(out.rglob("__pycache__"))
    private = json.loads((out / "course" / "bundle.json").read_text())["private"]
    assert "grading/checks.py" in private
    for name in private:  # out of the public part, in the private one, which git ignores
        assert not (out / "course" / "coursekit" / name).exists()
        assert (out / "private" / "coursekit" / name).read_bytes() == (ROOT / "coursekit" / name).read_bytes()
    assert (out / "private" / ".gitignore").read_text().splitlines()[-1] == "*"
    compile((out / "autograder.py").read_text(), "autograder.py", "exec")


def test_classroom50_bundle_with_public_checks(tmp_path):
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle", public_checks=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "autograder.py", "course", "runtime.json"]
    assert json.loads((out / "runtime.json").read_text()) == {"runs-on": "ubuntu-latest", "python": "3.11",
                                                             "apt": ["bubblewrap"]}
    assert json.loads((out / "course" / "bundle.json").read_text()) == {"private": []}
    assert (out / "course" / "coursekit" / "grading" / "checks.py").is_file()


def load_autograder(bundle: Path, prefix: Path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("COURSEKIT_PREFIX", str(prefix))
    spec = importlib.util.spec_from_file_location("c50_autograder", bundle / "autograder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classroom50_autograder_takes_the_private_part_from_the_runner(tmp_path, monkeypatch):
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle")
    shutil.copytree(out / "private", tmp_path / "runner" / "private")
    load_autograder(out, tmp_path / "runner", monkeypatch).install_private_part()
    assert (out / "course" / "coursekit" / "grading" / "checks.py").read_bytes() == \
        (ROOT / "coursekit" / "grading" / "checks.py").read_bytes()


def test_classroom50_autograder_grades_nothing_without_the_private_part(tmp_path, monkeypatch):
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle")
    with pytest.raises(SystemExit, match="does not hold the grader's private part"):
        load_autograder(out, tmp_path / "empty-runner", monkeypatch).install_private_part()


def test_classroom50_autograder_installs_the_cpu_build_first():
    source = (TEMPLATES / "classroom50_autograder.py").read_text()
    assert '"coursekit/platforms/install_env.py", "."' in source and '"-m", "coursekit", "data"' in source
    assert '"-m", "coursekit.platforms.classroom50"' in source and "apparmor_restrict_unprivileged_userns" in source


def test_classroom50_refuses_fractional_points(tmp_path, monkeypatch):
    rubric = Rubric((GradedCell("test_linear", 2.5, True, "Part 1"),))
    monkeypatch.setattr(classroom50, "load_rubric", lambda _: rubric)
    with pytest.raises(ValueError, match="test_linear"):
        classroom50.write_bundle(COURSE, tmp_path / "bundle")


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(dest)
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zipped.infolist()}
    for name, mode in modes.items():  # extractall drops the modes
        (dest / name).chmod(mode)
    return dest


def test_gradescope_zip(tmp_path):
    archive = gradescope.write_zip(COURSE, tmp_path / "autograder.zip")
    with zipfile.ZipFile(archive) as zipped:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zipped.infolist()}
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755 and modes["README.md"] == 0o644
    assert {name.split("/")[0] for name in modes} == {"setup.sh", "run_autograder", "README.md", "course"}
    assert "course/coursekit/platforms/gradescope.py" in modes and "course/coursekit/grading/checks.py" in modes
    assert not any(name.startswith("course/coursekit/platforms/templates") for name in modes)
    source = unzip(archive, tmp_path / "source")
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(source / script)]).returncode == 0, script
    assert 'AUTOGRADER_ROOT="${AUTOGRADER_ROOT:-/autograder}"' in (source / "run_autograder").read_text()


# What the bundle says of Gradescope's defaults (768 MB, half a CPU, 10 minutes): the memory must be raised.
SETTINGS_TO_RAISE = ("Raise the memory", "memory: 2 GB or more", "The default 768 MB is not enough")


def fake_command(folder: Path, name: str, script: str) -> None:
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


def test_gradescope_setup_installs_outside_autograder_and_says_which_settings_to_raise(tmp_path):
    """setup.sh run with stand-ins for apt-get and Python: what it installs where, and its last words."""
    source = unzip(gradescope.write_zip(COURSE, tmp_path / "autograder.zip"), tmp_path / "source")
    tools = tmp_path / "bin"
    tools.mkdir()
    fake_command(tools, "apt-get", 'echo "apt-get $*" >> "$LOG"')
    venv_python = (
        'mkdir -p "$3/bin"; printf \'#!/bin/sh\\necho "python $*" >> "$LOG"\\n\' > "$3/bin/python"; '
        'chmod +x "$3/bin/python"'
    )
    fake_command(tools, "python3.11", venv_python)
    log, prefix = tmp_path / "log", tmp_path / "opt"
    run = subprocess.run(["bash", str(source / "setup.sh")], capture_output=True, text=True,
                         env={"PATH": f"{tools}:/usr/bin:/bin", "LOG": str(log), "COURSEKIT_PREFIX": str(prefix)})
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    assert "apt-get install -y -qq bubblewrap" in calls
    assert "python course/coursekit/platforms/install_env.py course" in calls
    assert "python -m coursekit data --offline" in calls
    for phrase in SETTINGS_TO_RAISE:
        assert phrase in run.stdout, phrase


def test_gradescope_readme_says_which_settings_to_raise(tmp_path):
    readme = (
        unzip(gradescope.write_zip(COURSE, tmp_path / "autograder.zip"), tmp_path / "source") / "README.md"
    ).read_text()
    table = readme[readme.index("## Settings to raise"):readme.index("## What runs where")]
    assert re.search(r"^\| memory \| 768 MB \| \*\*2 GB or more\*\* \|", table, re.M)
    for setting in ("CPU", "timeout"):
        assert re.search(rf"^\| {setting} \| [^|]+ \| the default \|", table, re.M), setting


def fake_python(folder: Path, cpu_index_answers: bool, torch_version: str) -> Path:
    """A stand-in for the Python that install_env.py installs into: it logs each call."""
    folder.mkdir(exist_ok=True)
    fake_command(folder, "python", f'echo "$*" >> "{folder}/calls"\ncase "$*" in\n'
                                   f'  *download.pytorch.org*) exit {0 if cpu_index_answers else 1};;\n'
                                   f'  *importlib.metadata*) echo "{torch_version}";;\nesac')
    return folder / "python"


@pytest.mark.parametrize("answers, version, build", [(True, "2.14.1+cpu", "cpu"), (False, "2.14.1", "pypi"),
                                                     (True, "2.14.1", "pypi")])  # a pip config's links won
def test_install_env_tries_the_cpu_build_first(tmp_path, answers, version, build):
    from coursekit.platforms import install_env

    python = fake_python(tmp_path / "bin", answers, version)
    assert install_env.install(ROOT, str(python)) == build
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    pins = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith(("torch==", "torchvision=="))
    ]
    assert len(pins) == 2 and calls[0].endswith(f"--index-url {install_env.CPU_INDEX} {' '.join(pins)}")
    assert "--no-deps" in calls[0].split()
    assert calls[1].endswith(f"-r {ROOT / 'requirements.txt'} -c {ROOT / 'constraints.txt'}")


def test_find_notebook(tmp_path):
    name = COURSE.notebook_name
    assert find_notebook(tmp_path, name) is None
    (tmp_path / "release" / "x").mkdir(parents=True)
    (tmp_path / "release" / "x" / "mine.ipynb").write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / "release" / "x" / "mine.ipynb"  # the only notebook
    (tmp_path / "release" / "x" / name).write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / "release" / "x" / name
    (tmp_path / name).write_text("{}")
    assert find_notebook(tmp_path, name) == tmp_path / name


def test_readme_shows_the_three_routes_with_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Where the course runs"):readme.index("## CI")]
    for route in ("**nbgrader", "**Classroom 50**", "**Gradescope**"):
        assert route in section, route
    commands = [shlex.split(c.replace("K/N", "1/2")) for c in re.findall(r"`python -m coursekit ([^`]+)`", section)]
    assert {"autograde", "export", "classroom50", "gradescope"} <= {c[0] for c in commands}
    for argv in commands:
        build_parser().parse_args(argv)


# ---------------------------------------------------------------- mapping to Classroom 50's result.json

def test_classroom50_result_from_ours():
    now = datetime(2026, 11, 23, 10, 5, 9, tzinfo=timezone.utc)
    result = classroom50.result_json(our_results(("test_linear", 8.0, 8.0), ("test_relu", 2.67, 4.0)), RUNNER_ENV, now)
    assert result["schema"] == "classroom50/result/v1"
    assert {key: result[key] for key in IDENTITY} == {key: RUNNER_ENV[var] for key, var in IDENTITY.items()}
    assert result["datetime"] == result["graded_at"] == "2026-11-23T10:05:09Z"
    assert result["submitted_by"] == {"username": "alice-s", "id": 4242}
    assert result["tests"] == [
        {"test-name": "Part 1: test_linear", "passed": True, "score": 8, "max-score": 8, "exact-score": 8.0,
         "output": "PASS  test_linear"},
        {"test-name": "Part 1: test_relu", "passed": False, "score": 2, "max-score": 4, "exact-score": 2.67,
         "output": "PASS  test_relu"}]
    assert (result["score"], result["max-score"]) == (10, 12)


def test_classroom50_identity_from_the_actions_variables_alone():
    env = {
        k: v
        for k, v in RUNNER_ENV.items()
        if k.startswith("GITHUB_") or k in ("CLASSROOM", "ASSIGNMENT", "SUBMISSION_TAG")
    }
    env["GITHUB_ACTOR_ID"] = ""
    result = classroom50.result_json(our_results(), env, datetime.now(timezone.utc))
    repository = "https://github.com/ml-org/ml-2026-classifier-from-scratch-alice-s"
    assert result["owner"] == "ml-org" and result["assignment_type"] == "individual"
    assert result["commit"] == result["review"] == f"{repository}/commit/abc1234"
    assert result["release"] == f"{repository}/releases/tag/submit%2F2026-11-23T10-00-00Z-abc1234"
    assert result["submitted_by"] == {"username": "alice-s", "id": None}
    assert (result["score"], result["max-score"], result["tests"]) == (0, 0, [])


def test_classroom50_never_leaves_a_students_own_result(tmp_path, monkeypatch):
    for name in ("result.json", "release-body.md", "feedback.html"):
        (tmp_path / name).write_text("forged by the student")

    def grader_fails(*args, **kwargs):
        raise RuntimeError("no sandbox")

    monkeypatch.setattr(classroom50, "grade_notebook", grader_fails)
    with pytest.raises(RuntimeError):  # the runner reports an error instead of publishing a result
        classroom50.grade_checkout(tmp_path, COURSE, RUNNER_ENV)
    assert not list(tmp_path.iterdir())


def test_classroom50_release_body_keeps_a_students_message_inside_its_fence():
    import markdown_it

    message = "Note: cell 3: error: ValueError: oops\n```\n# Full marks\n[claim](https://example.org)\n````"
    body = classroom50.release_body({"score": 40, "max-score": 80}, {"output": f"Autograded score: 40 / 80\n{message}"})
    tokens = markdown_it.MarkdownIt().parse(body)
    assert [t.type for t in tokens if t.type in ("fence", "heading_open", "link_open")] == ["fence"]
    assert message in next(t.content for t in tokens if t.type == "fence")


@pytest.mark.parametrize("login, name", [("alice-s", "alice-s"), ("../../etc", "_.._etc"), ("", "student")])
def test_classroom50_student_folder_name(login, name):
    assert classroom50.student_name({"OWNER": login}) == name


# ---------------------------------------------------------------- mapping to Gradescope's results.json

def executed_notebook(path: Path) -> Path:
    def test_cell(grade_id, outputs, count=1):
        cell = nbformat.v4.new_code_cell("assert True", execution_count=count, outputs=outputs)
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": grade_id, "points": 4}
        return cell

    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong shape", traceback=[])
    solution = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    solution.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "linear"}
    notebook = nbformat.v4.new_notebook(cells=[
        solution, test_cell("test_linear", []), test_cell("test_relu", [error]), test_cell("test_mlp", [], None),
        nbformat.v4.new_code_cell("print(1)", execution_count=2)])
    nbformat.write(notebook, path)
    return path


TEXT = gradescope.Options("after_published", "text", False, "hidden")


def test_gradescope_visible_tests_from_the_executed_notebook(tmp_path):
    tests = gradescope.visible_tests(executed_notebook(tmp_path / "executed.ipynb"), TEXT)
    assert [(t["name"].split(":")[0], t["status"], t["output"]) for t in tests] == [
        ("test_linear", "passed", ""), ("test_relu", "failed", "AssertionError: wrong shape"),
        ("test_mlp", "failed", "did not run")]
    assert {t["visibility"] for t in tests} == {"visible"} and not any("score" in t for t in tests)
    assert gradescope.visible_tests(tmp_path / "absent.ipynb", TEXT) == []


def with_messages(results: dict, *messages: tuple[str, str]) -> dict:
    return {**results, "extra_data": {"messages": [{"kind": kind, "text": text} for kind, text in messages]}}


def test_gradescope_results_from_ours():
    ours = our_results(("test_linear", 8.0, 8.0), ("test_relu", 2.67, 4.0))
    visible = [{"name": "test_linear: the notebook's visible tests", "status": "passed", "visibility": "visible"}]
    report = gradescope.gradescope_results(ours, visible, TEXT)
    assert report["score"] == 10.67 and report["execution_time"] == 12.5 and report["stdout_visibility"] == "hidden"
    assert report["tests"][0] == visible[0] and "leaderboard" not in report
    hidden = report["tests"][1:]
    assert [(t["name"], t["score"], t["max_score"], t["status"], t["visibility"]) for t in hidden] == [
        ("Part 1: test_linear", 8.0, 8.0, "passed", "after_published"),
        ("Part 1: test_relu", 2.67, 4.0, "failed", "after_published")]


@pytest.mark.parametrize("visibility", ["after_due_date", "after_published", "hidden"])
def test_gradescope_output_shows_no_score_before_the_checks_show(visibility):
    ours = with_messages(our_results(("test_linear", 7.0, 8.0)), ("pending", "Pending manual grading: x (6)"),
                         ("late", "Late by 1 day(s) (percent_per_day): -0.7 points"))
    report = gradescope.gradescope_results(ours, [], gradescope.Options(visibility, "text", False, "hidden"))
    assert "7" not in report["output"] and "Pending manual grading: x (6)" in report["output"]
    assert {t["visibility"] for t in report["tests"]} == {visibility}
    shown = gradescope.gradescope_results(ours, [], gradescope.Options("visible", "text", False, "visible"))
    assert shown["output"].startswith("Autograded score: 7 / 8") and "-0.7 points" in shown["output"]
    assert shown["stdout_visibility"] == "visible"


def test_gradescope_output_says_how_the_notebook_was_isolated():
    ours = our_results(("test_linear", 8.0, 8.0))
    fallback = gradescope.gradescope_results(ours, [], TEXT, isolation="unprivileged user", network_off=True)
    assert "ran as an unprivileged user" in fallback["output"] and "had no network" in fallback["output"]
    assert fallback["extra_data"]["isolation"] == "unprivileged user"
    assert "Sandbox" not in gradescope.gradescope_results(ours, [], TEXT, isolation="bubblewrap")["output"]


def test_gradescope_markdown_output_cannot_be_shaped_by_a_students_message():
    ours = with_messages(our_results(("test_relu", 0.0, 4.0)),
                         ("note", "Note: cell 3: error: ValueError: ```\n# I am a heading\n[click](http://x)"))
    ours["tests"][0]["output"] = "FAIL  could not be read (TypeError: ```` **bold**)"
    report = gradescope.gradescope_results(ours, [], gradescope.Options("after_published", "md", False, "hidden"))
    assert report["output_format"] == "md" and report["tests"][0]["output_format"] == "md"
    note = report["output"].split("\n\n", 1)[1]
    assert note.startswith("````\n") and note.endswith("\n````") and note.count("````") == 2
    assert report["tests"][0]["output"].startswith("`````\n") and report["tests"][0]["output"].endswith("\n`````")


def test_gradescope_leaderboard_from_what_the_grader_measured():
    def model(grade_id, value):
        return {
            "name": grade_id,
            "score": 0,
            "max_score": 10,
            "status": "failed",
            "extra_data": {
                "grade_id": grade_id,
                "checks": [
                    {"passed": True, "sentence": "shapes", "measured": None},
                    {"passed": True, "sentence": "acc", "measured": value},
                ],
            },
        }

    ours = {"score": 0, "tests": [model("test_regression", 3.31456), model("test_logistic", 0.9066),
                                  model("test_mlp", 0.93604), model("test_linear", 1.0)]}
    report = gradescope.gradescope_results(ours, [], gradescope.Options("after_published", "text", True, "hidden"))
    assert report["leaderboard"] == [{"name": "Regression: test MSE", "value": 3.3146, "order": "asc"},
                                     {"name": "Logistic regression: test accuracy", "value": 0.9066, "order": "desc"},
                                     {"name": "Two-layer network: test accuracy", "value": 0.936, "order": "desc"}]


def test_gradescope_options_come_from_course_toml(tmp_path):
    from coursekit.config import ConfigError

    assert gradescope.Options.of(COURSE) == gradescope.Options("after_published", "text", False, "hidden")
    (tmp_path / "course.toml").write_text(
        '[gradescope]\nvisibility = "visible"\noutput_format = "md"\nleaderboard = true\n'
    )
    assert gradescope.Options.of(Course(tmp_path)) == gradescope.Options("visible", "md", True, "hidden")
    (tmp_path / "course.toml").write_text('[gradescope]\nvisibility = "soon"\n')
    with pytest.raises(ConfigError, match="visibility"):
        gradescope.Options.of(Course(tmp_path))


def read_results(root: Path) -> dict:
    report = json.loads((root / "results" / "results.json").read_text())
    assert isinstance(report["score"], (int, float)) and isinstance(report["output"], str)
    assert all(isinstance(test, dict) for test in report["tests"])
    return report


def test_gradescope_writes_a_zero_with_the_reason_when_the_grader_breaks(tmp_path, monkeypatch):
    def broken(root, course):
        raise RuntimeError("no worker could start")

    monkeypatch.setenv("AUTOGRADER_ROOT", str(tmp_path))
    monkeypatch.setattr(gradescope, "grade", broken)
    assert gradescope.main() == 0
    report = read_results(tmp_path)
    assert report["score"] == 0 and "RuntimeError: no worker could start" in report["output"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_gradescope_writes_a_zero_when_no_sandbox_can_start(tmp_path, monkeypatch):
    """bubblewrap refused and not root (so no fallback): grading does not start, results.json says why."""
    from coursekit.grading import bubblewrap

    monkeypatch.setenv("AUTOGRADER_ROOT", str(tmp_path))
    monkeypatch.setattr(bubblewrap, "bubblewrap_works", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(gradescope, "grade_notebook", lambda *args, **kwargs: pytest.fail("graded without a sandbox"))
    assert gradescope.main() == 0
    report = read_results(tmp_path)
    assert report["score"] == 0 and gradescope.NO_SANDBOX in report["output"]


@pytest.mark.parametrize("python, why", [("/bin/false", "(exit status 1)"),  # no Python, or a broken one
                                         ("kill", "(killed, most often for lack of memory")])  # Gradescope's OOM killer
def test_run_autograder_writes_results_even_when_the_grader_dies(tmp_path, python, why):
    root = tmp_path / "autograder"
    unzip(gradescope.write_zip(COURSE, tmp_path / "autograder.zip"), root / "source")
    if python == "kill":
        fake_command(tmp_path, "python", "kill -9 $$")
        python = str(tmp_path / "python")
    run = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(root), "COURSEKIT_PYTHON": python})
    assert run.returncode == 0, run.stderr
    report = read_results(root)
    assert report["score"] == 0 and f"stopped before writing its results {why}" in report["output"]


# ---------------------------------------------------------------- execution_time

def test_execution_time_is_the_time_spent_before_the_report_is_written(tmp_path):
    written = []

    def sleeps(runner, submission):
        time.sleep(0.3)

    def reports(runner, submission):  # as write_report does: results.json from the record
        written.append(results_json(submission)["execution_time"])

    run_steps(None, Submission("student", tmp_path / "notebook.ipynb"), (sleeps, reports))
    assert written[0] >= 0.3


# ---------------------------------------------------------------- whole runs (the real grader)

def runner_env(**extra: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    return {**keep, **extra}


@pytest.mark.slow
def test_classroom50_autograder_grades_a_checkout(tmp_path):
    bundle = classroom50.write_bundle(COURSE, tmp_path / "autograders" / "classifier-from-scratch")
    shutil.copytree(bundle / "private", tmp_path / "runner" / "private")  # what the self-hosted runner holds
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "submitted" / "alice_complete" / COURSE.assignment, checkout)
    run = subprocess.run([str(VENV_PYTHON), str(bundle / "autograder.py")], cwd=checkout, capture_output=True,
                         env=runner_env(**RUNNER_ENV, COURSEKIT_PREFIX=str(tmp_path / "runner")), text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((checkout / "result.json").read_text())
    assert set(result) == {"schema", *IDENTITY, "datetime", "graded_at", "score", "max-score", "tests", "submitted_by"}
    assert result["schema"] == "classroom50/result/v1"
    assert {key: result[key] for key in IDENTITY} == {key: RUNNER_ENV[var] for key, var in IDENTITY.items()}
    assert STAMP.match(result["datetime"]) and STAMP.match(result["graded_at"])
    assert result["submitted_by"] == {"username": "alice-s", "id": 4242}
    rubric = load_rubric(COURSE.source_notebook).autograded
    assert [t["test-name"] for t in result["tests"]] == [f"{c.part}: {c.grade_id}" for c in rubric]
    for test, cell in zip(result["tests"], rubric):
        assert {"test-name", "passed", "score", "max-score"} <= set(test)
        assert type(test["passed"]) is bool and type(test["score"]) is int and type(test["max-score"]) is int
        assert test["max-score"] == cell.points and 0 <= test["score"] <= test["max-score"]
        assert test["passed"] == (test["score"] == test["max-score"])
    lost = [(t["test-name"], t.get("output", "")[:800]) for t in result["tests"] if not t["passed"]]
    assert result["score"] == sum(t["score"] for t in result["tests"]) == result["max-score"] == 80, (
        lost
    )  # the solution
    assert "**80 / 80**" in (checkout / "release-body.md").read_text()
    assert "feedback for alice-s" in (checkout / "feedback.html").read_text()


def with_cell(student: str, source: str, dest: Path, early: bool = False) -> Path:
    """A copy of an example submission with one more code cell: at the end, or (`early`) right after the
    first code cell, where a notebook that runs out of time on a loaded machine still reaches it."""
    shutil.copytree(ROOT / "submitted" / student / COURSE.assignment, dest)
    notebook = nbformat.read(dest / COURSE.notebook_name, as_version=4)
    first_code = next(index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    position = first_code + 1 if early else len(notebook.cells)
    notebook.cells.insert(position, nbformat.v4.new_code_cell(source))
    nbformat.write(notebook, dest / COURSE.notebook_name)
    return dest


@pytest.fixture
def open_tmp():
    """A folder every uid may pass through, as /autograder's parent, /, is (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="coursekit-gradescope-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def gradescope_layout(folder: Path, submission: Path) -> Path:
    """Gradescope's layout: source/ (the zip), run_autograder, submission/."""
    root = folder / "autograder"
    unzip(gradescope.write_zip(COURSE, folder / "autograder.zip"), root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    shutil.move(submission, root / "submission")
    return root


def run_autograder(root: Path, **env: str) -> dict:
    run = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True, text=True,
                         env=runner_env(**{"AUTOGRADER_ROOT": str(root), "COURSEKIT_PYTHON": str(VENV_PYTHON), **env}))
    assert run.returncode == 0, run.stdout + run.stderr
    return read_results(root)


@pytest.mark.slow
def test_gradescope_autograder_grades_a_submission(open_tmp):
    submission = with_cell("erin_partial", "import time\ntime.sleep(5)", open_tmp / "erin")
    root = gradescope_layout(open_tmp, submission)
    report = run_autograder(root)
    rubric = load_rubric(COURSE.source_notebook).autograded
    visible = [t for t in report["tests"] if t["visibility"] == "visible"]
    hidden = [t for t in report["tests"] if t["visibility"] == "after_published"]
    assert len(visible) + len(hidden) == len(report["tests"])
    assert [t["name"] for t in hidden] == [f"{c.part}: {c.grade_id}" for c in rubric]
    assert [t["name"].split(":")[0] for t in visible] == [c.grade_id for c in rubric]
    assert [t["max_score"] for t in hidden] == [c.points for c in rubric]
    assert report["score"] == pytest.approx(sum(t["score"] for t in hidden)) == 56  # only the blocks and the regression
    assert {t["status"] for t in visible} == {"passed", "failed"}
    for test in hidden:
        assert test["status"] == ("passed" if test["score"] == test["max_score"] else "failed")
    assert report["execution_time"] >= 5  # the sleeping cell's time is in it
    assert "56" not in report["output"] and "when the course staff publishes the grades" in report["output"]
    assert report["extra_data"]["isolation"] == "bubblewrap"


@pytest.fixture(scope="module")
def python_for_any_uid():
    """The venv's Python where any uid can run it; else (an interpreter under root's home, as with pyenv) a
    venv on the system's Python 3.11 with a hard-linked copy of the same packages (the fallback refuses an
    interpreter its uid cannot run, so the test needs one it can)."""
    from coursekit.grading import unprivileged

    uid = unprivileged.free_uid()
    if unprivileged.runs_as(uid, [VENV_PYTHON.parent.parent], python=str(VENV_PYTHON)):
        yield VENV_PYTHON
        return
    system = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip("no Python 3.11 that an unprivileged uid can run")
    venv = Path(tempfile.mkdtemp(prefix="coursekit-venv-"))
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = venv / "lib" / "python3.11" / "site-packages"
    shutil.rmtree(packages)
    subprocess.run(
        ["cp", "-al", str(VENV_PYTHON.parent.parent / "lib" / "python3.11" / "site-packages"), str(packages)],
        check=True,
    )
    venv.chmod(0o755)
    yield venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="module")
def mnist_for_any_uid():
    """FASTAI_HOME with MNIST where any uid can read it (a hard-linked copy when it sits in root's home)."""
    from coursekit.data import provision

    mnist = provision(online=False, progress=False)
    home = Path(tempfile.mkdtemp(prefix="coursekit-fastai-"))
    (home / "data").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(mnist), str(home / "data" / mnist.name)], check=True)
    subprocess.run(
        [str(VENV_PYTHON), "-c", "from fastai.data.external import fastai_cfg; fastai_cfg()"],  # its config.ini
        env={**os.environ, "FASTAI_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    subprocess.run(["chmod", "-R", "go+rX", str(home)], check=True)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def fake_bwrap(folder: Path) -> str:
    """A `bwrap` that fails as it does under Docker's default seccomp profile; PATH with it first."""
    folder.mkdir(exist_ok=True)
    (folder / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n"
    )
    (folder / "bwrap").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


ATTACKS = """
import json, os, socket
attempts = {{}}
for name, attempt in [
        ("read the grader", lambda: open("{root}/source/course/coursekit/grading/checks.py").read()),
        ("read the submission's metadata", lambda: open("{root}/submission_metadata.json").read()),
        ("write the results", lambda: open("{root}/results/forged.json", "w").write('{{"score": 1000}}')),
        ("reach the network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=5))]:
    try:
        attempt()
        attempts[name] = "succeeded"
    except Exception as error:
        attempts[name] = type(error).__name__
print("ATTEMPTS", json.dumps(attempts))
"""


def attempts_in(root: Path) -> dict:
    executed = nbformat.read(root / "source" / "course" / "autograded" / gradescope.STUDENT / COURSE.assignment /
                             COURSE.notebook_name, as_version=4)
    cell = next(cell for cell in executed.cells if 'print("ATTEMPTS"' in cell.source)
    printed = "".join(o.get("text", "") for o in cell.outputs)
    assert "ATTEMPTS " in printed, cell.outputs
    return json.loads(printed.split("ATTEMPTS ", 1)[1])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback switches uid: root only")
def test_gradescope_grades_in_the_fallback_when_bubblewrap_cannot_start(open_tmp, python_for_any_uid,
                                                                        mnist_for_any_uid):
    """Student code that tries to read the autograder's files, write its results and reach the network
    fails, and the complete solution keeps its 80 points."""
    listener = socket.create_server(("127.0.0.1", 0))
    root = open_tmp / "autograder"
    attacks = ATTACKS.format(root=root, port=listener.getsockname()[1])
    root = gradescope_layout(open_tmp, with_cell("alice_complete", attacks, open_tmp / "alice", early=True))
    (root / "submission_metadata.json").write_text('{"users": [{"email": "alice@example.org"}]}')
    report = run_autograder(root, PATH=fake_bwrap(open_tmp / "bin"), COURSEKIT_PYTHON=str(python_for_any_uid),
                            FASTAI_HOME=str(mnist_for_any_uid))
    assert report["extra_data"]["isolation"] == "unprivileged user"
    assert "ran as an unprivileged user" in report["output"] and "had no network" in report["output"]
    assert report["score"] == 80
    assert attempts_in(root) == {
        "read the grader": "PermissionError",
        "read the submission's metadata": "PermissionError",
        "write the results": "PermissionError",
        "reach the network": "PermissionError",
    }
    assert sorted(p.name for p in (root / "results").iterdir()) == ["results.json"]
    listener.settimeout(0.5)
    with pytest.raises(socket.timeout):
        listener.accept()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs the autograder as another uid: root only")
def test_gradescope_writes_a_zero_with_the_reason_when_no_sandbox_can_run(open_tmp, python_for_any_uid,
                                                                         mnist_for_any_uid):
    """bubblewrap fails as under Docker's seccomp and the autograder is not root, so no fallback either:
    run_autograder grades nothing and still writes a valid results.json that says why."""
    from coursekit.grading import unprivileged

    root = gradescope_layout(open_tmp, with_cell("alice_complete", "print(1)", open_tmp / "alice"))
    uid = unprivileged.free_uid()
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(root)], check=True)
    env = runner_env(AUTOGRADER_ROOT=str(root), COURSEKIT_PYTHON=str(python_for_any_uid),
                     FASTAI_HOME=str(mnist_for_any_uid), PATH=fake_bwrap(open_tmp / "bin"), HOME=str(root))
    run = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True, text=True, env=env,
                         user=uid, group=uid, extra_groups=[])
    assert run.returncode == 0, run.stdout + run.stderr
    report = read_results(root)
    assert report["score"] == 0 and gradescope.NO_SANDBOX in report["output"]
    assert not (root / "source" / "course" / "autograded").exists()  # nothing was graded
