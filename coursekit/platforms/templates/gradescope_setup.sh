#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu), from the
# unpacked zip (/autograder/source). Written by `python -m coursekit gradescope OUT.zip`.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

# Python 3.11: Ubuntu 22.04 has it; newer releases need the deadsnakes archive.
if ! apt-get install -y -qq python3.11 python3.11-venv; then
  apt-get install -y -qq software-properties-common
  add-apt-repository -y ppa:deadsnakes/ppa
  apt-get update -qq
  apt-get install -y -qq python3.11 python3.11-venv
fi

# The sandbox. Where the image cannot run it, run_autograder refuses to grade unless
# COURSEKIT_REQUIRE_SANDBOX=0 is set in it (student code then runs unconfined).
apt-get install -y -qq bubblewrap || echo "WARNING: bubblewrap could not be installed"

python3.11 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -r course/requirements.txt -c course/constraints.txt
cd course
../.venv/bin/python -m coursekit data --offline
