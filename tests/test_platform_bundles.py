"""What the Classroom 50 bundle and the Gradescope zip contain (no solution line, every module they import),
their install scripts, and the README's routes."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from coursekit.cli import build_parser
from coursekit.config import Course
from coursekit.grading.rubric import GradedCell, Rubric, load_rubric
from coursekit.platforms import classroom50, find_notebook, gradescope
from support import fake_command, unzip

COURSE = Course(ROOT)


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
    runs_on = json.loads((out / "runtime.json").read_text())["runs-on"]  # the labels the README has one register
    assert "self-hosted" in runs_on and f"`{json.dumps(runs_on)}`" in (out / "README.md").read_text()
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
    runtime, readme = json.loads((out / "runtime.json").read_text()), (out / "README.md").read_text()
    pinned_for = re.search(r"^PYTHON\s*\?=\s*python(\d+\.\d+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    assert runtime["python"] == pinned_for and f"Python {pinned_for}" in readme  # the Python the pins are made for
    assert runtime["runs-on"].startswith("ubuntu") and "bubblewrap" in runtime["apt"]  # apt, and the sandbox
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


def test_classroom50_autograder_installs_the_cpu_build_first(tmp_path, monkeypatch):
    """On a fresh GitHub runner: the bundled installer (PyTorch's CPU build first) when the requirements do not
    import, user namespaces allowed for bubblewrap, then MNIST, then the bundle's grader on the checkout."""
    out = classroom50.write_bundle(COURSE, tmp_path / "bundle", public_checks=True)
    autograder, calls, sudo = load_autograder(out, tmp_path / "fresh-runner", monkeypatch), [], []
    monkeypatch.setattr(autograder, "run", lambda python, *args, env=None: calls.append(args) or int(args[0] == "-c"))
    monkeypatch.setattr(autograder.subprocess, "run", lambda command, **kwargs: sudo.append(command))
    monkeypatch.setenv("RUNNER_ENVIRONMENT", "github-hosted")
    assert autograder.main() == 0
    assert calls == [("-c", "import nbgrader, torch, fastai"), ("coursekit/platforms/install_env.py", "."),
                     ("-m", "coursekit", "data"), ("-m", "coursekit.platforms.classroom50", os.getcwd())]
    assert (out / "course" / calls[1][0]).is_file()
    assert sudo == [["sudo", "sysctl", "-w", "kernel.apparmor_restrict_unprivileged_userns=0"]]


def test_classroom50_refuses_fractional_points(tmp_path, monkeypatch):
    rubric = Rubric((GradedCell("test_linear", 2.5, True, "Part 1"),))
    monkeypatch.setattr(classroom50, "load_rubric", lambda _: rubric)
    with pytest.raises(ValueError, match="test_linear"):
        classroom50.write_bundle(COURSE, tmp_path / "bundle")


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


