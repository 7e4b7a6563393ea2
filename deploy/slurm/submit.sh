#!/bin/bash
# Submit the grading array, then the merge, which starts when every task has ended (afterany: a failed
# shard does not hold back the others' grades). Run from the course kit's folder; extra arguments go
# to both sbatch calls (e.g. --account=... --partition=...).
set -euo pipefail

here=$(dirname "$0")
array=$(sbatch --parsable "$@" "$here/grade.sbatch")
merge=$(sbatch --parsable "$@" --dependency="afterany:${array%%;*}" "$here/merge.sbatch")
echo "grading: job array ${array%%;*}; merge: job ${merge%%;*} (starts when the array has ended)"
