"""nbgrader configuration for the course (run nbgrader from this folder)."""
import importlib.util
import os
import sys

c = get_config()  # noqa: F821  (injected by nbgrader)

ROOT = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "classifier_from_scratch_course"
c.IncludeHeaderFooter.header = ""
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120

# formgrader's per-row "Autograde" and "Generate Feedback" buttons, and the nbgrader commands behind them,
# go through the kit (coursekit/course/formgrader.py): autograde refuses a submission coursekit graded in
# the sandbox, generate_feedback writes the kit's offline page. nbgrader runs from the environment's
# scripts folder, so the kit is found here, in the course folder.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if importlib.util.find_spec("coursekit") is not None:  # a copy of this file in a folder without the kit: nbgrader's own
    c.Autograde.exporter_class = "coursekit.course.formgrader.GuardedNotebookExporter"
    c.GenerateFeedback.exporter_class = "coursekit.course.formgrader.FeedbackPageExporter"
