"""One shard's recording, as a process of its own: it prepares its results, prints "ready" and waits for
a line on its standard input (so that every shard starts at the same moment), then makes sure the
course's gradebook (COURSEKIT_DB_URL, if set) has the assignment and records the given students.

    python tests/record_shard.py COURSE_ROOT CLASS_SIZE STUDENT...

Prints one line per student it could not record and exits 1 if there was one."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coursekit.config import Course  # noqa: E402
from coursekit.course.gradebook import ensure_assignment, record_submission  # noqa: E402
from prepared_results import prepared_class, submit  # noqa: E402


def main(root: str, size: str, *students: str) -> int:
    course = Course(Path(root))
    by_name = {prepared.student: prepared for prepared in prepared_class(int(size))}
    results = [submit(course, by_name[student]) for student in students]
    print("ready", flush=True)
    sys.stdin.readline()
    ensure_assignment(course)
    failed = 0
    for result in results:
        try:
            record_submission(course, result)
        except Exception as error:  # the test reads these lines: which student was lost, and why
            print(f"{result.student}: {type(error).__name__}: {str(error)[:300]}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
