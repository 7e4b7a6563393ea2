#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu), from the
# unpacked zip (/autograder/source). Written by `python -m coursekit gradescope OUT.zip`.
# The environment and MNIST go to /opt/coursekit, outside /autograder, where the fallback's unprivileged
# user (run_autograder, where bubblewrap cannot start) can use them without reaching the grader's files.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
PREFIX="${COURSEKIT_PREFIX:-/opt/coursekit}"
apt-get update -qq

# Python 3.11: Ubuntu 22.04 has it; newer releases need the deadsnakes archive.
if ! apt-get install -y -qq python3.11 python3.11-venv; then
  apt-get install -y -qq software-properties-common
  add-apt-repository -y ppa:deadsnakes/ppa
  apt-get update -qq
  apt-get install -y -qq python3.11 python3.11-venv
fi

# The sandbox. Where Docker's seccomp profile stops it, run_autograder falls back to an unprivileged user.
apt-get install -y -qq bubblewrap || echo "NOTE: bubblewrap could not be installed: grading will use the fallback"

python3.11 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" course/coursekit/platforms/install_env.py course  # PyTorch's CPU build first
(cd course && FASTAI_HOME="$PREFIX/fastai" "$PREFIX/venv/bin/python" -m coursekit data --offline)
chmod -R go+rX "$PREFIX"

cat <<'SETTINGS'
==> Raise the memory of this assignment's autograder (Gradescope: the assignment's Settings, Autograder settings):
    memory: 2 GB or more. The default 768 MB is not enough: one submission peaks at about 1.4 GB (the grader
            and the notebook's kernel each load PyTorch, whose PyPI build is the CUDA one); at 768 MB the
            grader is killed and the student gets a zero that says so. With less than course.toml's
            memory_gib plus 1.5 GB, a notebook that uses a lot of memory kills the whole autograder
            instead of being stopped by its own limit.
    CPU and timeout: the defaults (half a CPU, 10 minutes) are enough; one submission took 2 minutes on half a CPU.
SETTINGS
