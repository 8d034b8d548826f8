"""The report card of a grade: ``grade.json``, ``report.html``, ``junit.xml``, and the same card
as a terminal table; the class's ``index.html`` and ``grades.csv``.

``report.html`` is one self-contained page (inline CSS and SVG, no script, no network): the
score, a row per lesson (✓ pass, ✗ fail, n/a, ⚠ error) with the sentence of what it checks and
the first mismatch in words, links to the lesson's pcapng, transcript and the program's
output, the build log, and each lesson's ladder diagram inline.  Everything the submission
wrote (its name, build messages, output) is escaped: a card is safe to open whatever the
program printed.  Templates: ``harness/report/templates/`` (Jinja2).
"""

from __future__ import annotations

import csv
import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
MARKS = {"pass": "✓", "fail": "✗", "n/a": "n/a", "error": "⚠"}
STATUSES = tuple(MARKS)


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                       lstrip_blocks=True)


def _ladder(gdir: Path, lesson: dict, i: int) -> str:
    """The lesson's ladder SVG, to inline (its marker id made unique in the page)."""
    rel = lesson.get("files", {}).get("ladder")
    if not rel or not (gdir / rel).is_file():
        return ""
    svg = (gdir / rel).read_text(encoding="utf-8")
    return svg.replace('id="arrow"', f'id="arrow{i}"').replace("url(#arrow)", f"url(#arrow{i})")


def score_text(grade: dict) -> str:
    text = f"{grade['score']}/{grade['max_score']}"
    if grade.get("bonus_max"):
        bonus = sum(l["points"] for l in grade["lessons"] if l["bonus"])
        text += f" (bonus {bonus}/{grade['bonus_max']} included)"
    return text


def render_html(gdir: Path, grade: dict) -> str:
    build_log = (gdir / "build.log").read_text(errors="replace") \
        if (gdir / "build.log").exists() else ""
    lessons = [dict(l, mark=MARKS[l["status"]], ladder=_ladder(gdir, l, i))
               for i, l in enumerate(grade["lessons"])]
    counts = {s: sum(l["status"] == s for l in lessons) for s in STATUSES}
    return _env().get_template("card.html.j2").render(
        g=grade, lessons=lessons, build_log=build_log, counts=counts,
        score=score_text(grade), percent=_percent(grade))


def _percent(grade: dict) -> int:
    return round(100 * grade["score"] / grade["max_score"]) if grade["max_score"] else 0


def junit_xml(grade: dict) -> str:
    """One testsuite, one testcase per lesson: fail -> <failure>, error -> <error>,
    n/a -> <skipped>, with the why as the message."""
    ls = grade["lessons"]
    suite = ET.Element("testsuite", name=f"{grade['rubric']}: {grade['submission']}",
                       tests=str(len(ls)),
                       failures=str(sum(l["status"] == "fail" for l in ls)),
                       errors=str(sum(l["status"] == "error" for l in ls)),
                       skipped=str(sum(l["status"] == "n/a" for l in ls)),
                       time=str(sum(l.get("seconds", 0) for l in ls)))
    props = ET.SubElement(suite, "properties")
    for k in ("score", "max_score", "backend", "built"):
        ET.SubElement(props, "property", name=k, value=str(grade[k]))
    for l in ls:
        case = ET.SubElement(suite, "testcase", classname=f"{grade['rubric']}.{grade['submission']}",
                             name=l["lesson"], time=str(l.get("seconds", 0)))
        tag = {"fail": "failure", "error": "error", "n/a": "skipped"}.get(l["status"])
        if tag:
            el = ET.SubElement(case, tag, message=l["why"])
            el.text = l["why"]
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") \
        + "\n"


def format_table(grade: dict, width: int = 110) -> str:
    """The card for the terminal: a row per lesson, its why wrapped under it."""
    out = [f"{grade['submission']} — {grade['rubric_title']} ({grade['backend']})",
           f"score {score_text(grade)}"]
    name_w = max(len(l["lesson"]) for l in grade["lessons"])
    indent = " " * (2 + 4 + name_w + 2 + 8 + 1)
    for l in grade["lessons"]:
        pts = f"{l['points']:>3}/{l['max_points']:<3}" + ("+" if l["bonus"] else " ")
        why = textwrap.wrap(l["why"], max(40, width - len(indent))) or [""]
        out.append(f"  {MARKS[l['status']]:<3} {l['lesson']:<{name_w}}  {pts} {why[0]}".rstrip())
        out += [indent + more for more in why[1:]]
    b = grade["build"]
    out.append("built: " + (b["how"] if grade["built"] else f"no — {b['error']}"))
    return "\n".join(out)


def write_card(gdir: Path, grade: dict) -> None:
    """grade.json, report.html and junit.xml into the grade's folder."""
    gdir = Path(gdir)
    (gdir / "grade.json").write_text(json.dumps(grade, indent=2) + "\n")
    (gdir / "junit.xml").write_text(junit_xml(grade))
    (gdir / "report.html").write_text(render_html(gdir, grade), encoding="utf-8")


# ---------------------------------------------------------------- a class

CSV_FIELDS = ("submission", "score", "max_score", "built", "passed", "failed", "errors", "n/a",
              "report")


def class_rows(grades: list, root: Path) -> list[dict]:
    rows = []
    for g in grades:
        ls = g.get("lessons", [])
        rows.append({"submission": g["submission"], "score": g.get("score", 0),
                     "max_score": g.get("max_score", 0), "built": g.get("built", False),
                     "passed": sum(l["status"] == "pass" for l in ls),
                     "failed": sum(l["status"] == "fail" for l in ls),
                     "errors": sum(l["status"] == "error" for l in ls),
                     "n/a": sum(l["status"] == "n/a" for l in ls),
                     "report": str(Path(g["grade_dir"], "report.html").relative_to(root))
                     if g.get("grade_dir") else "", "why": g.get("error", ""),
                     "lessons": {l["lesson"]: l["status"] for l in ls}})
    return sorted(rows, key=lambda r: r["submission"])


def write_class(root: Path, grades: list, title: str) -> None:
    """``index.html`` (a table sortable by any column, a link per student) and
    ``grades.csv`` for a class graded into ``root``."""
    rows = class_rows(grades, root)
    lessons = []
    for r in rows:
        lessons += [n for n in r["lessons"] if n not in lessons]
    with open(root / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CSV_FIELDS, *lessons])
        for r in rows:
            w.writerow([r[k] for k in CSV_FIELDS] + [r["lessons"].get(n, "") for n in lessons])
    html = _env().get_template("class.html.j2").render(rows=rows, lessons=lessons, title=title,
                                                       marks=MARKS)
    (root / "index.html").write_text(html, encoding="utf-8")
