"""The feedback page: offline, student HTML escaped, math as MathML, only PNG/JPEG pictures kept."""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from coursekit.grading.feedback import keep_safe_outputs, render_markdown, render_page

PLOT_RGB = (30, 60, 220)
FETCHES = re.compile(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(|@import""", re.IGNORECASE)


def png(size=(240, 160), colour=PLOT_RGB) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def display(data: dict):
    return new_output("display_data", data=data)


def graded_test(name: str, score: float, max_score: float, checks: list[tuple[bool, str]]) -> dict:
    part, grade_id = name.split(": ")
    return {
        "name": name,
        "score": score,
        "max_score": max_score,
        "status": "passed" if score == max_score else "failed",
        "extra_data": {
            "grade_id": grade_id,
            "part": part,
            "checks": [{"passed": passed, "sentence": sentence} for passed, sentence in checks],
        },
    }


def results(score=8) -> dict:
    return {"score": score, "output": "Autograded score: 8 / 10\nNote: cell 3: error",
            "tests": [graded_test("Part 1: test_linear", 8, 8, [(True, "forward")]),
                      graded_test("Part 3: test_logistic", 0, 2, [(False, "accuracy")])],
            "extra_data": {"pending_manual": {"reflection_answer": 6}, "late": None,
                           "messages": [{"kind": "note", "text": "Note: cell 3: error"}]}}


def notebook_with_a_plot():
    return new_notebook(
        cells=[
            new_markdown_cell(
                "## Part 1\nThe gradient $\\frac{\\partial f}{\\partial x_i}$ and a table:\n\n| part | points |\n"
                "|---|---|\n| 1 | 8 |"
            ),
            new_code_cell("plt.plot(losses)", outputs=[display({"image/png": png(), "text/plain": "<Figure>"})]),
        ]
    )


def test_only_text_and_real_png_or_jpeg_outputs_are_kept():
    fake_png = base64.b64encode(b"<svg onload=alert(1)>").decode()
    cell = new_code_cell("x", outputs=[
        display({"text/html": "<script>alert(1)</script>", "text/plain": "table"}),
        display({"image/svg+xml": "<svg/>", "application/javascript": "alert(1)"}),
        display({"image/png": fake_png}),
        display({"image/png": png(), "text/plain": "<Figure>"}),
        new_output("stream", name="stdout", text="loss 0.3\n")])
    kept = keep_safe_outputs(new_notebook(cells=[cell])).cells[0].outputs
    assert [sorted(out.get("data", {})) for out in kept] == [["text/plain"], ["image/png", "text/plain"], []]


def test_an_oversized_picture_is_dropped():
    from coursekit.grading import feedback

    big = png(size=(64, 64))
    cell = new_code_cell("x", outputs=[display({"image/png": big})])
    original = feedback.MAX_IMAGE_BYTES
    feedback.MAX_IMAGE_BYTES = len(base64.b64decode(big)) - 1
    try:
        assert keep_safe_outputs(new_notebook(cells=[cell])).cells[0].outputs == []
    finally:
        feedback.MAX_IMAGE_BYTES = original


def test_markdown_is_rendered_with_mathml_and_student_html_escaped():
    page = render_markdown("### 1.1 Linear layer\nSee <script>alert(1)</script> $\\frac{a}{b}$ and `$not math$`\n\n"
                           "$$\\text{<img src=x onerror=alert(1)>} x^2$$\n\n$$\\text{a <b> text} \\sum_i x_i^2$$\n\n![tracker](http://example.com/p.png)")
    assert "<h3" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert re.search(r"<math[^>]*><mrow><mfrac>", page) and "<code>$not math$</code>" in page
    assert re.search(r"<math[^>]*display=\"block\"><mrow><mtext>a.&lt;b&gt;.text</mtext><munder>", page)
    assert "<img" not in page and "example.com" not in page and "[image: tracker]" in page


def test_a_hint_in_details_is_rendered_collapsed_with_its_markdown():
    page = render_markdown("Try it first.\n\n<details>\n<summary>Hint: the <b>formula</b></summary>\n\n"
                           "The derivative is $2x$, **not** $x$.\n\n</details>")
    assert re.search(
        r"<details>\s*<summary>Hint: the &lt;b&gt;formula&lt;/b&gt;</summary>\s*<p>The derivative is <math", page
    )
    assert "<strong>not</strong>" in page and page.rstrip().endswith("</details>") and "<details open" not in page


@pytest.mark.parametrize("markdown", ["<details onclick=alert(1)>\n<summary>s</summary>\n\nx\n\n</details>",
                                      "<details><script>alert(1)</script></details>",
                                      "<details>\n<summary>never closed</summary>\n\nthe rest of the page",
                                      "</details>\n\n</details>\n\ntext"])
def test_other_html_around_details_stays_escaped_and_a_cell_cannot_fold_the_page(markdown):
    page = render_markdown(markdown)
    assert "<script" not in page and "<details onclick" not in page
    assert page.count("<details>") == page.count("</details>")


def test_the_page_fetches_nothing_and_shows_the_plot_and_manual_cells():
    page = render_page("classifier_from_scratch", "alice", results(), notebook_with_a_plot())
    assert "<script" not in page.lower() and not FETCHES.search(page)
    assert page.count("data:image/png;base64,") == 1 and "<math" in page
    assert "reflection_answer" in page and "not graded yet / 6" in page


def screenshot(html: str, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(html)
    shot = tmp_path / "shot.png"
    command = [
        shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
        f"--screenshot={shot}",
        "--window-size=1000,1400",
        page.as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    from PIL import Image

    return Image.open(shot).convert("RGB")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_chromium_renders_the_score_table_and_the_plot(tmp_path):
    image = screenshot(render_page("classifier_from_scratch", "alice", results(), notebook_with_a_plot()), tmp_path)
    colours = image.getcolors(maxcolors=1_000_000)
    count = {rgb: n for n, rgb in colours}
    assert count.get(PLOT_RGB, 0) >= 240 * 160 * 0.9, "the plot is not on the page"
    for row in ((200, 230, 201), (255, 205, 210), (255, 245, 157)):  # passed, failed, to grade by hand
        assert count.get(row, 0) > 2000, f"no table row in {row}"


def test_after_manual_grading_the_page_shows_grades_comments_penalty_and_total():
    from coursekit.course.gradebook import ManualGrade, StudentTotal

    data = results()
    data["output"] += "\nPending manual grading: reflection_answer (6)"
    data["extra_data"]["late"] = {"days_late": 1, "penalty": 1.3, "policy": "10% of the score per day started late",
                                  "timestamp": "2026-12-05T09:00:00", "due": "2026-12-04T23:59:00"}
    grades = StudentTotal("alice", 13, 16, 1.3, [ManualGrade("reflection_answer", 6, 5, "Name the <b>trade-off</b>.")])
    page = render_page("classifier_from_scratch", "alice", data, None, grades)
    assert "Pending manual grading" not in page and "5 / 6" in page and "Name the &lt;b&gt;trade-off&lt;/b&gt;." in page
    assert "-1.3" in page and "11.7 / 16" in page


def test_student_text_in_the_page_cannot_pass_for_the_graders_lines():
    data = results()
    data["tests"][1]["extra_data"]["checks"][0]["sentence"] = "train raised: boom\nPASS  train: every check"
    data["extra_data"]["messages"] = [{"kind": "note", "text": "Note: cell 3: error: E: x\nAutograded score: 80 / 80"}]
    page = render_page("classifier_from_scratch", "alice", data, None)
    rows = re.findall(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert "FAIL  train raised: boom ⏎ PASS  train: every check" in rows
    assert not any(line.startswith("PASS  train") for row in rows for line in row.splitlines())
    assert re.findall(r"<li>(.*?)</li>", page) == ["Note: cell 3: error: E: x ⏎ Autograded score: 80 / 80"]


def late_results() -> dict:
    """Graded 2 days late on the autograded score alone (56 points): -11.2, as results.json records it."""
    data = results()
    data["extra_data"]["late"] = {"days_late": 2, "penalty": 11.2, "policy": "10% of the score per day started late",
                                  "timestamp": "2026-12-06T10:00:00", "due": "2026-12-04T23:59:00"}
    data["extra_data"]["messages"].append({"kind": "late", "text": "Late by 2 day(s) (10% per day): -11.2 points"})
    return data


def test_the_late_line_comes_from_the_gradebook_once_there_are_manual_grades():
    from coursekit.course.gradebook import ManualGrade, StudentTotal

    grades = StudentTotal("erin", 71, 100, 14.2, [ManualGrade("reflection_answer", 6, 5)], days_late=2)
    page = render_page("classifier_from_scratch", "erin", late_results(), None, grades)
    assert "11.2" not in page and page.count("-14.2") == 1 and "56.8 / 100" in page


def test_an_extension_leaves_no_late_penalty_anywhere_on_the_page():
    from coursekit.course.gradebook import ManualGrade, StudentTotal

    grades = StudentTotal("erin", 71, 100, 0.0, [ManualGrade("reflection_answer", 6, 5)], days_late=0,
                          extension_seconds=3 * 86400)
    page = render_page("classifier_from_scratch", "erin", late_results(), None, grades)
    assert "11.2" not in page and "-0<" not in page and "Late by" not in page
    assert "within your extension" in page and "with an extension of 3 day(s)" in page and "71 / 100" in page
