"""Classroom 50 autograder for the "classifier from scratch" assignment (written by
`python -m coursekit classroom50`). The runner calls it in the student's checkout; it completes the grader
in course/ beside it with the private part the runner holds (course/bundle.json names it), installs the
pinned environment unless the runner has it, then grades the checkout's notebook in a bubblewrap sandbox
and writes result.json, release-body.md and feedback.html there.

A self-hosted runner keeps its environment in $COURSEKIT_PREFIX (default /opt/coursekit): venv/ (the
pinned requirements), fastai/ (MNIST) and private/ (the grader's checks); see README.md."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

COURSE = Path(__file__).resolve().parent / "course"
PREFIX = Path(os.environ.get("COURSEKIT_PREFIX", "/opt/coursekit"))


def run(python: str, *args: str, env: dict | None = None) -> int:
    """`python args` from course/, so `-m coursekit` is the bundle's grader, never a student's copy."""
    return subprocess.run([python, *args], cwd=COURSE, env=env).returncode


def install_private_part() -> None:
    """The grader's checks, which the public bundle leaves out, from the runner's private folder."""
    for name in json.loads((COURSE / "bundle.json").read_text())["private"]:
        held = PREFIX / "private" / "coursekit" / name
        if not held.is_file():
            sys.exit(f"autograder: {held} is missing: this runner does not hold the grader's private part "
                     "(see the bundle's README.md, 'A self-hosted runner'); nothing was graded")
        shutil.copy2(held, COURSE / "coursekit" / name)


def grader_python() -> str:
    """The runner's own environment where it has one; else this Python, with the requirements installed
    (PyTorch's CPU build first) on the first run of a fresh runner."""
    prepared = PREFIX / "venv" / "bin" / "python"
    if prepared.is_file():
        return str(prepared)
    if run(sys.executable, "-c", "import nbgrader, torch, fastai") != 0:
        if run(sys.executable, "coursekit/platforms/install_env.py", ".") != 0:
            sys.exit("autograder: could not install the grader's requirements")
    return sys.executable


def allow_user_namespaces() -> None:
    """Ubuntu 24.04 runners restrict the unprivileged user namespaces bubblewrap needs (AppArmor)."""
    if os.environ.get("RUNNER_ENVIRONMENT") == "github-hosted":
        subprocess.run(["sudo", "sysctl", "-w", "kernel.apparmor_restrict_unprivileged_userns=0"], check=False)


def main() -> int:
    install_private_part()
    python = grader_python()
    allow_user_namespaces()
    env = {**os.environ, "FASTAI_HOME": str(PREFIX / "fastai")} if (PREFIX / "fastai").is_dir() else None
    if run(python, "-m", "coursekit", "data", env=env) != 0:
        sys.exit("autograder: could not provision MNIST")
    return run(python, "-m", "coursekit.platforms.classroom50", os.getcwd(), env=env)


if __name__ == "__main__":
    sys.exit(main())
