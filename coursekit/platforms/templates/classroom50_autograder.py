"""Classroom 50 autograder for the "classifier from scratch" assignment (written by
`python -m coursekit classroom50`). The runner calls it in the student's checkout; it installs the
course's grader from course/ beside it, then grades the checkout's notebook in a bubblewrap sandbox
and writes result.json, release-body.md and feedback.html there."""
import os
import subprocess
import sys
from pathlib import Path

COURSE = Path(__file__).resolve().parent / "course"


def run(*args: str) -> int:
    """`python args` from course/, so `-m coursekit` is the bundle's grader, never a student's copy."""
    return subprocess.run([sys.executable, *args], cwd=COURSE).returncode


def install_grader() -> None:
    if run("-c", "import nbgrader, torch, fastai") != 0:  # the first run on a fresh runner
        if run("-m", "pip", "install", "--quiet", "-r", "requirements.txt", "-c", "constraints.txt") != 0:
            sys.exit("could not install the grader's requirements")


def allow_user_namespaces() -> None:
    """Ubuntu 24.04 runners restrict the unprivileged user namespaces bubblewrap needs (AppArmor)."""
    if os.environ.get("RUNNER_ENVIRONMENT") == "github-hosted":
        subprocess.run(["sudo", "sysctl", "-w", "kernel.apparmor_restrict_unprivileged_userns=0"], check=False)


install_grader()
allow_user_namespaces()
if run("-m", "coursekit", "data") != 0:
    sys.exit("could not provision MNIST")
sys.exit(run("-m", "coursekit.platforms.classroom50", os.getcwd()))
