"""nbgrader's own autograde and generate_feedback, pointed at the kit by nbgrader_config.py, so that
formgrader's per-row "Autograde" and "Generate Feedback" buttons (and the same nbgrader commands)
cannot undo what coursekit recorded:

- `GuardedNotebookExporter` (`Autograde.exporter_class`): nbgrader's autograde re-runs a notebook
  outside the sandbox and replaces its results; it stops, before it removes anything, when a
  submission it would process was graded by coursekit's sandboxed grader, and names the command to
  use instead. Submissions coursekit never graded are autograded by nbgrader as usual.
- `FeedbackPageExporter` (`GenerateFeedback.exporter_class`): the feedback page nbgrader writes is the
  kit's offline page (what `coursekit feedback` writes), for every submission coursekit graded.
"""
from __future__ import annotations

from pathlib import Path

from nbconvert.exporters import HTMLExporter, NotebookExporter
from nbgrader.converters.base import NbGraderException

from coursekit.config import Course
from coursekit.course.gradebook import recorded_total
from coursekit.grading.feedback import recorded_page


def graded_by_coursekit(course: Course, student: str) -> bool:
    return course.results_file(student).is_file()


class GuardedNotebookExporter(NotebookExporter):
    """nbgrader's autograde exporter, created once the submissions to process are known (`parent` is
    nbgrader's Autograde converter) and before any of them is touched."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        converter = self.parent
        root = Path(converter.coursedir.root)
        folders = [Path(folder) for folder in converter.assignments]  # submitted/<student>/<assignment>
        graded = sorted(f.parent.name for f in folders if graded_by_coursekit(Course(root, f.name), f.parent.name))
        if graded:
            message = (f"nbgrader autograde stopped: {', '.join(graded)} already graded by coursekit's sandboxed "
                       "grader. nbgrader's autograde would run the notebook outside the sandbox and replace those "
                       "results; nothing was changed. Re-grade from the course folder with "
                       f"`python -m coursekit autograde {' '.join(graded)}`.")
            converter.log.error(message)
            raise NbGraderException(message)


class FeedbackPageExporter(HTMLExporter):
    """nbgrader's generate_feedback exporter: the kit's page for a submission coursekit graded,
    nbgrader's own HTML otherwise."""

    def from_notebook_node(self, nb, resources=None, **kw):
        about = (resources or {}).get("nbgrader", {})
        course = Course(Path(self.parent.coursedir.root), about.get("assignment", ""))
        student = about.get("student", "")
        if not graded_by_coursekit(course, student):
            return super().from_notebook_node(nb, resources, **kw)
        page = recorded_page(course, student, recorded_total(course, student))
        return page, self._init_resources(resources)
