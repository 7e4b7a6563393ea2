"""Install the course's pinned environment into this Python: PyTorch's CPU-only build first, where its
index can be reached (grading never uses CUDA, whose libraries are most of PyPI's build), else PyPI's;
then everything else from requirements.txt and constraints.txt. Standard library only: it runs before
anything is installed (Gradescope's setup.sh, Classroom 50's autograder.py, the CI workflow).

    python install_env.py COURSE_FOLDER     (the folder holding requirements.txt and constraints.txt)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")  # their CPU wheels carry a +cpu label, which `==` pins accept


def pip(python: str, *args: str) -> int:
    return subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", *args]).returncode


def cpu_pins(requirements: Path) -> list[str]:
    """The `name==version` lines of requirements.txt for the packages PyTorch builds for the CPU."""
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    return [line for line in lines if line.split("==")[0].strip().lower() in CPU_BUILDS]


def torch_build(python: str) -> str:
    """"cpu" when the installed torch is PyTorch's CPU build, else "pypi" (a pip configuration's own
    index or links can serve PyPI's build even for the CPU index's request)."""
    version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True).stdout.strip()
    return "cpu" if version.endswith("+cpu") else "pypi"


def install(course: Path, python: str = sys.executable) -> str:
    """Returns which build of PyTorch is installed: "cpu" or "pypi"."""
    # --no-deps: their dependencies come from the pins below; a quick timeout where the index is unreachable
    if pip(python, "--no-deps", "--timeout", "30", "--retries", "1", "--index-url", CPU_INDEX,
           *cpu_pins(course / "requirements.txt")) != 0:
        print(f"install_env: {CPU_INDEX} cannot be reached from here; PyPI's build (with CUDA) instead", flush=True)
    if pip(python, "-r", str(course / "requirements.txt"), "-c", str(course / "constraints.txt")) != 0:
        sys.exit("install_env: could not install the pinned requirements")
    return torch_build(python)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit(__doc__)
    print(f"install_env: PyTorch's {install(Path(argv[1]))} build is installed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
