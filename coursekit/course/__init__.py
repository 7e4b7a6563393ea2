"""The course loop around the grader: collect submissions, nbgrader's gradebook, late work, LMS export."""
