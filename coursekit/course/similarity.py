"""Similarity report: which students' code is too alike, found with copydetect (MOSS-style winnowing
over tokens in which every name becomes V, F or O and every string S, so renaming variables or
rewording comments hides nothing). Compared: each student's own code, the cells they could edit
(solution cells and the cells they added, as the grader's sanitizer rebuilds them). The release
notebook's code and the fundamentals notebooks' are boilerplate: what everyone was given never counts.

A pair is listed when either student's share of code found in the other's is at least the threshold;
the report shows the matching regions. Similar code is a reason for a person to look, not a verdict."""
from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import highlight_overlap

from coursekit.config import Course
from coursekit.course.inert import write_csv
from coursekit.grading.rubric import nbgrader_meta
from coursekit.grading.sanitize import Sanitized, UnreadableSubmission, read_submission, sanitize

NOISE = 25          # copydetect's default k: the shortest match (in filtered characters) that counts
THRESHOLD = 0.5
BOILERPLATE_NOTEBOOKS = ("release/*/*.ipynb", "fundamentals/*.ipynb")


@dataclass(frozen=True)
class StudentCode:
    student: str
    text: str                            # the student's cells, one after the other
    cells: tuple[tuple[int, str], ...]   # (offset in text, the cell's name), in order


@dataclass(frozen=True)
class Pair:
    first: StudentCode
    second: StudentCode
    shares: tuple[float, float]          # of each one's code, the part found in the other's
    matched_tokens: int
    slices: tuple[np.ndarray, np.ndarray]  # matching regions (2 x n: starts, ends) in each text

    @property
    def share(self) -> float:
        return max(self.shares)

    def cells(self, which: int) -> list[str]:
        """The cells that the matching regions of one side overlap, in notebook order."""
        code, (starts, ends) = (self.first, self.second)[which], self.slices[which]
        bounds = [*(start for start, _ in code.cells[1:]), len(code.text)]
        return [name for (start, name), end in zip(code.cells, bounds)
                if any(first < end and start < last for first, last in zip(starts, ends))]


def student_code(course: Course, student: str, release: nbformat.NotebookNode) -> StudentCode:
    """The student's editable cells (raises UnreadableSubmission like the grader)."""
    notebook = read_submission(course.submitted_notebook(student), course.submission(student).parent)
    return editable_code(student, sanitize(notebook, release))


def editable_code(student: str, clean: Sanitized) -> StudentCode:
    text, cells = "", []
    for cell in clean.editable:
        first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
        cells.append(
            (len(text), str(nbgrader_meta(clean.notebook.cells[cell.index]).get("grade_id") or f'"{first[:40]}"'))
        )
        text += cell.source.rstrip() + "\n\n"
    return StudentCode(student, text, tuple(cells))


def boilerplate_hashes(course: Course) -> np.ndarray:
    """Every k-gram of the code everyone was given (copydetect's way: a window of 1): the release's and
    the fundamentals' code cells, and the release's editable cells one after the other as a student's
    are compared (so that where one cell meets the next counts as given too)."""
    release = nbformat.read(course.release_notebook, as_version=4)
    given = [editable_code("release", sanitize(release, release)).text]
    for pattern in BOILERPLATE_NOTEBOOKS:
        for path in sorted(course.root.glob(pattern)):
            given.append(
                "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
            )
    return np.unique(np.concatenate([list(fingerprint(code, "given", []).hashes) for code in given]))


def fingerprint(code: str, name: str, boilerplate) -> CodeFingerprint:
    return CodeFingerprint(name, NOISE, 1, boilerplate, filter=True, language="python", fp=io.StringIO(code))


def compare_class(codes: list[StudentCode], boilerplate: np.ndarray) -> list[Pair]:
    """Every pair of students, most alike first."""
    prints = [fingerprint(code.text, code.student, boilerplate) for code in codes]
    pairs = []
    for i, first in enumerate(codes):
        for j in range(i + 1, len(codes)):
            tokens, shares, (first_slices, second_slices) = compare_files(prints[i], prints[j])
            slices = (regions(first_slices), regions(second_slices))
            pairs.append(Pair(first, codes[j], (float(shares[0]), float(shares[1])), int(tokens), slices))
    return sorted(pairs, key=lambda pair: -pair.share)


def regions(slices: np.ndarray) -> np.ndarray:
    """copydetect's slices as 2 x n (starts, ends); it gives a flat empty array when nothing matches."""
    return slices.reshape(2, -1).astype(int) if slices.size else np.zeros((2, 0), dtype=int)


def read_class(course: Course, students: list[str]) -> tuple[list[StudentCode], list[str]]:
    """(the readable students' code, a note for each one that could not be read)."""
    release = nbformat.read(course.release_notebook, as_version=4)
    codes, notes = [], []
    for student in students:
        try:
            codes.append(student_code(course, student, release))
        except UnreadableSubmission as error:
            notes.append(f"{student}: not compared: {error}")
    return codes, notes


def write_report(pairs: list[Pair], threshold: float, folder: Path) -> Path:
    """pairs.csv (every pair at or over the threshold) and report.html (their matching regions)."""
    listed = [pair for pair in pairs if pair.share >= threshold]
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(
        folder / "pairs.csv",
        [
            ("student_a", "student_b", "share_a", "share_b", "matched_tokens", "cells_a", "cells_b"),
            *(
                (
                    p.first.student,
                    p.second.student,
                    f"{p.shares[0]:.2f}",
                    f"{p.shares[1]:.2f}",
                    p.matched_tokens,
                    " ".join(p.cells(0)),
                    " ".join(p.cells(1)),
                )
                for p in listed
            ),
        ],
    )
    (folder / "report.html").write_text(report_page(listed, len(pairs), threshold))
    return folder / "report.html"


def highlighted(code: StudentCode, regions: np.ndarray) -> str:
    if regions.shape[1] == 0:
        return html.escape(code.text)
    marked, _ = highlight_overlap(code.text, regions, "<mark>", "</mark>", escape_html=True)
    return marked


def report_page(listed: list[Pair], compared: int, threshold: float) -> str:
    """One offline page (nothing fetched, the students' code escaped)."""
    sections = "".join(
        f"<h2>{html.escape(p.first.student)} ({p.shares[0]:.0%}) and {html.escape(p.second.student)} "
        f"({p.shares[1]:.0%})</h2>"
        f"<p>Matching in {html.escape(', '.join(p.cells(0)))} / {html.escape(', '.join(p.cells(1)))}</p>"
        f"<div class='pair'><pre>{highlighted(p.first, p.slices[0])}</pre><pre>{highlighted(p.second, p.slices[1])}"
        "</pre></div>"
        for p in listed
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Similarity report</title><style>body{{font-family:sans-serif;margin:1em}} .pair{{display:flex;gap:1em}}
.pair pre{{flex:1;overflow:auto;background:#f5f5f5;padding:.5em;font-size:80%;line-height:1.5}} mark{{background:#ffcdd2}}</style></head><body>
<h1>Similarity report</h1><p>{len(listed)} of {compared} pairs at or over {threshold:.0%} (a student's share of code
found in the other's; code everyone was given does not count). Similar code is a reason to look, not a verdict.</p>
{sections}</body></html>"""  # noqa: E501 (HTML, CSS or code, kept byte for byte)
