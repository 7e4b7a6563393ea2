"""The feedback page: one self-contained HTML file that works offline (no scripts, nothing fetched),
with the score table, the manual grades and comments once given, and the notebook as the grader ran
it: markdown rendered (raw HTML in it escaped), math as MathML, plots as PNG/JPEG data URIs."""
from __future__ import annotations

import base64
import binascii
import functools
import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import cast

import mistune
import nbformat
from latex2mathml.converter import convert as latex_to_mathml

from coursekit.config import Course
from coursekit.course.inert import one_line

MAX_IMAGE_BYTES = 2**20  # decoded, per image
STAND_IN = "coursekit_stand_in"  # notebook metadata: the release under a note, kept where nothing could run
IMAGE_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
MATHML_NS = "http://www.w3.org/1998/Math/MathML"
MATHML_TAGS = {"math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "mfrac", "msqrt", "mroot", "msub", "msup",
               "msubsup", "munder", "mover", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom",
               "menclose", "semantics", "annotation"}
MATHML_ATTRIBUTES = {
    "display",
    "mathvariant",
    "stretchy",
    "fence",
    "separator",
    "lspace",
    "rspace",
    "columnalign",
    "rowspacing",
    "columnspacing",
    "width",
    "height",
    "depth",
    "accent",
    "accentunder",
    "movablelimits",
    "minsize",
    "maxsize",
    "notation",
    "displaystyle",
    "scriptlevel",
    "linethickness",
    "form",
}
MATH = re.compile(r"(?P<code>`[^`\n]*`)|\$\$(?P<display>.+?)\$\$|(?<![\\$])\$(?P<inline>[^$\n]+?)\$", re.DOTALL)
STRAY_TAG = re.compile(r"<(?!/?(?:%s)[\s>/])" % "|".join(sorted(MATHML_TAGS, key=len, reverse=True)))
STRAY_AMPERSAND = re.compile(r"&(?!#x?[0-9A-Fa-f]+;|[A-Za-z]+;)")
PLACEHOLDER = re.compile(r"MATHPLACEHOLDER(\d+)X")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DISCLOSURE_TAG = re.compile(r"<(/?)(details|summary)>", re.IGNORECASE)

ET.register_namespace("", MATHML_NS)


def image_bytes(mime: str, value) -> bytes | None:
    """The decoded image if it really is a PNG/JPEG under the size cap, else None."""
    text = "".join(value) if isinstance(value, list) else value
    if mime not in IMAGE_SIGNATURES or not isinstance(text, str) or len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4096:
        return None
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None
    return data if len(data) <= MAX_IMAGE_BYTES and data.startswith(IMAGE_SIGNATURES[mime]) else None


def safe_output(output) -> nbformat.NotebookNode | None:
    """Streams, errors, text and PNG/JPEG pictures; HTML, SVG, JavaScript and widgets are dropped."""
    kind = output.get("output_type")
    if kind in ("stream", "error"):
        return output
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data", {})
    kept = {mime: value for mime, value in data.items() if image_bytes(mime, value) is not None}
    if isinstance(data.get("text/plain"), (str, list)):
        kept["text/plain"] = data["text/plain"]
    if not kept:
        return None
    return nbformat.from_dict({**output, "data": kept, "metadata": {}})


def keep_safe_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [kept for kept in map(safe_output, cell.get("outputs", [])) if kept is not None]
    return notebook


def clean_mathml(mathml: str) -> str:
    """latex2mathml copies \\text{...} verbatim: escape what is not a MathML tag, then re-serialize keeping
    only MathML elements and attributes."""
    mathml = STRAY_AMPERSAND.sub("&amp;", STRAY_TAG.sub("&lt;", mathml))
    root = ET.fromstring(mathml)
    for element in list(root.iter()):
        for child in list(element):
            if child.tag.removeprefix(f"{{{MATHML_NS}}}") not in MATHML_TAGS:
                element.remove(child)
        for name in list(element.attrib):
            if name not in MATHML_ATTRIBUTES:
                del element.attrib[name]
    return ET.tostring(root, encoding="unicode", short_empty_elements=False)


def math_html(latex: str, display: bool) -> str:
    try:
        return clean_mathml(latex_to_mathml(latex, display="block" if display else "inline"))
    except Exception:  # LaTeX the converter cannot read is shown as written
        return f"<code>{html.escape(latex)}</code>"


def disclosure_html(raw: str) -> str | None:
    """A block of only `<details>`, `<summary>...</summary>` and `</details>` (a collapsed hint, as
    Jupyter shows it), with the summary's text escaped; None for any other HTML."""
    parts, outside_summary, position = [], True, 0
    for match in DISCLOSURE_TAG.finditer(raw):
        text = raw[position:match.start()]
        if outside_summary and text.strip():
            return None
        parts += [html.escape(text), f"<{match.group(1)}{match.group(2).lower()}>"]
        outside_summary = not (match.group(2).lower() == "summary" and not match.group(1))
        position = match.end()
    if not parts or raw[position:].strip() or not outside_summary:
        return None
    return "".join(parts) + "\n"


class OfflineRenderer(mistune.HTMLRenderer):
    """Raw HTML is escaped, but for collapsed hints (`<details>`); a markdown image would be fetched
    from wherever it points, so only its description is shown."""

    def __init__(self):
        super().__init__(escape=True)

    def block_html(self, html_text: str) -> str:
        return disclosure_html(html_text) or super().block_html(html_text)

    def image(self, text: str, url: str, title=None) -> str:
        return f"<span class='no-image'>[image: {text}]</span>"


@functools.cache
def markdown_parser() -> mistune.Markdown:
    return mistune.create_markdown(renderer=OfflineRenderer(), plugins=["table", "strikethrough"])


def render_markdown(text: str) -> str:
    formulas: list[str] = []

    def stash(match: re.Match) -> str:
        if match.group("code"):
            return match.group("code")
        display = match.group("display") is not None
        formulas.append(math_html(match.group("display") if display else match.group("inline"), display))
        return f"MATHPLACEHOLDER{len(formulas) - 1}X"

    html_text = cast(str, markdown_parser()(MATH.sub(stash, text)))  # an HTML renderer's output is a str
    body = balanced_disclosures(html_text)
    return PLACEHOLDER.sub(lambda m: formulas[int(m.group(1))], body)


def balanced_disclosures(body: str) -> str:
    """Every `<details>` of a cell closed within it, and a stray `</details>` dropped, so that no cell
    can fold the rest of the page into itself (only the renderer writes these tags; text is escaped)."""
    depth, kept = 0, []
    for piece in re.split(r"(</?details>)", body):
        if piece == "</details>":
            if depth == 0:
                continue
            depth -= 1
        elif piece == "<details>":
            depth += 1
        kept.append(piece)
    return "".join(kept) + "</details>" * depth


def output_html(output) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return f"<pre class='stream'>{html.escape(ANSI.sub('', str(output.get('text', ''))))}</pre>"
    if kind == "error":
        return (
            f"<pre class='error'>{html.escape(ANSI.sub('', chr(10).join(map(str, output.get('traceback', [])))))}</pre>"
        )
    data = output.get("data", {})
    for mime in IMAGE_SIGNATURES:
        picture = image_bytes(mime, data.get(mime))
        if picture is not None:
            return f"<img class='plot' alt='plot' src='data:{mime};base64,{base64.b64encode(picture).decode()}'>"
    text = data.get("text/plain", "")
    return f"<pre>{html.escape(''.join(text) if isinstance(text, list) else str(text))}</pre>"


def notebook_html(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(f"<div class='markdown'>{render_markdown(str(cell.source))}</div>")
        elif cell.cell_type == "code":
            outputs = "".join(output_html(out) for out in cell.get("outputs", []) if safe_output(out) is not None)
            parts.append(f"<div class='code'><pre class='source'>{html.escape(str(cell.source))}</pre>{outputs}</div>")
    return "\n".join(parts)


STYLE = """body{font-family:sans-serif;max-width:70em;margin:auto;padding:0 1em} td,th{vertical-align:top;padding:.3em;text-align:left}
table.scores{border-collapse:collapse} tr.pass{background:#c8e6c9} tr.fail{background:#ffcdd2} tr.pending{background:#fff59d}
tr.late{background:#ffe0b2} tr.total{font-weight:bold;border-top:2px solid #333} pre{white-space:pre-wrap;margin:0}
.code{margin:.6em 0} pre.source{background:#f5f5f5;padding:.4em;border-left:3px solid #90a4ae} pre.stream{padding:.3em}
pre.error{background:#fdecea;padding:.3em} img.plot{max-width:100%} .markdown table{border-collapse:collapse}
.markdown td,.markdown th{border:1px solid #ccc} math[display=block]{margin:.5em 0}
details{margin:.5em 0;padding:.3em .6em;border:1px solid #ddd} summary{cursor:pointer;font-weight:bold}"""  # noqa: E501 (HTML, CSS or code, kept byte for byte)


def checks_text(checks: object) -> str:
    """A part's sub-checks, one line each (a sentence quoting the student stays on its line)."""
    lines = [check for check in checks if isinstance(check, dict)] if isinstance(checks, list) else []
    return "\n".join(("PASS  " if check.get("passed") else "FAIL  ") + one_line(check.get("sentence", ""))
                     for check in lines)


def test_rows(results: dict) -> list[str]:
    rows = []
    for test in results.get("tests", []):
        extra = test.get("extra_data") if isinstance(test.get("extra_data"), dict) else {}
        part, grade_id = str(extra.get("part", "")), str(extra.get("grade_id", ""))
        status = "pass" if test.get("status") == "passed" else "fail"
        rows.append(f"<tr class='{status}'><td>{html.escape(part)}</td><td>{html.escape(grade_id)}</td>"
                    f"<td>{test.get('score', 0):g} / {test.get('max_score', 0):g}</td>"
                    f"<td><pre>{html.escape(checks_text(extra.get('checks')))}</pre></td></tr>")
    return rows


def manual_rows(results: dict, grades) -> list[str]:
    """From the gradebook once a grader has been there, else the cells still to grade by hand."""
    if grades is not None:
        manual = [(g.grade_id, g.max_score, g.score, g.comment) for g in grades.manual]
    else:
        manual = [
            (grade_id, points, None, "")
            for grade_id, points in results.get("extra_data", {}).get("pending_manual", {}).items()
        ]
    rows = []
    for grade_id, max_score, score, comment in manual:
        points = "not graded yet" if score is None else f"{score:g}"
        rows.append(
            f"<tr class='{'pending' if score is None else 'pass'}'><td>graded by hand</td>"
            f"<td>{html.escape(grade_id)}</td>"
            f"<td>{points} / {max_score:g}</td><td><pre>{html.escape(comment)}</pre></td></tr>"
        )
    return rows


def late_row(results: dict, grades) -> str:
    """The page's one late line: the gradebook's once the submission is recorded there (the extension,
    and a penalty on the total with the manual grades), else the grader's."""
    late = results.get("extra_data", {}).get("late") or {}
    days, penalty = (
        (grades.days_late, grades.late_penalty)
        if grades is not None
        else (late.get("days_late", 0), late.get("penalty", 0))
    )
    extension = grades.extension_seconds if grades is not None else 0
    submitted = f"submitted {late.get('timestamp')}, due {late.get('due')}" + \
        (f" with an extension of {extension / 86400:.3g} day(s)" if extension else "")
    if days or penalty:
        return (f"<tr class='late'><td>late</td><td>{days} day(s) late</td><td>-{penalty:g}</td>"
                f"<td>{html.escape(str(late.get('policy', '')))}; {html.escape(submitted)}</td></tr>")
    if extension and late.get("days_late"):
        return (
            "<tr class='late'><td>late</td><td>within your extension</td><td></td><td>no penalty; "
            f"{html.escape(submitted)}</td></tr>"
        )
    return ""


def total_rows(results: dict, grades) -> list[str]:
    late = results.get("extra_data", {}).get("late") or {}
    if grades is not None:
        total, maximum = grades.total, grades.max_score
        remark = "written answers not all graded yet" if grades.manual_pending else ""
    else:
        maximum = sum(t.get("max_score", 0) for t in results.get("tests", []))
        total, remark = (
            max(0.0, results.get("score", 0) - late.get("penalty", 0)),
            "the autograded part; written answers are graded by hand",
        )
    total_row = f"<tr class='total'><td>total</td><td></td><td>{total:g} / {maximum:g}</td><td>{remark}</td></tr>"
    return [row for row in (late_row(results, grades), total_row) if row]


def render_page(assignment: str, student: str, results: dict, notebook: nbformat.NotebookNode | None,
                grades=None) -> str:
    """`grades`: the student's totals from nbgrader's gradebook (coursekit.course.gradebook), if any."""
    told = results.get("extra_data", {}).get("messages", [])
    # the table's rows say what is late, and, once there are grades, what is pending
    hidden = {"late", "pending"} if grades is not None else {"late"}
    shown = [m for m in told if isinstance(m, dict) and m.get("kind") not in hidden]
    notes = "".join(f"<li>{html.escape(one_line(m.get('text', '')))}</li>" for m in shown)
    rows = "".join(test_rows(results) + manual_rows(results, grades) + total_rows(results, grades))
    body = notebook_html(notebook) if notebook is not None else "<p>The grader could not run your notebook.</p>"
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Feedback: {html.escape(student)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(assignment)}: feedback for {html.escape(student)}</h1>
<ul>{notes}</ul>
<table class="scores"><tr><th>Part</th><th>Graded cell</th><th>Points</th><th>Checks and comments</th></tr>{rows}</table>
<h2>Your notebook as the grader ran it</h2>
{body}</body></html>"""  # noqa: E501 (HTML, CSS or code, kept byte for byte)


def recorded_page(course: Course, student: str, grades=None) -> str | None:
    """A student's page from autograded/ (results.json and the executed notebook) and `grades`; None
    when the student has not been autograded."""
    try:
        results = json.loads(course.results_file(student).read_text())
    except (OSError, ValueError):
        return None
    try:
        notebook = nbformat.read(course.executed_notebook(student), as_version=4)
    except Exception:  # no executed notebook: the page still shows the scores
        notebook = None
    if notebook is not None and notebook.metadata.get(STAND_IN):
        notebook = None
    return render_page(course.assignment, student, results, notebook, grades)


def write_feedback(course: Course, student: str, grades=None) -> Path | None:
    """Rewrite a student's page (see recorded_page)."""
    page = recorded_page(course, student, grades)
    if page is None:
        return None
    path = course.feedback_page(student)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
