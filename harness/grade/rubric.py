"""Rubrics: which lessons grade a responder, their points, one sentence each (data, YAML).

``rubrics/NAME.yml``::

    name: lab4
    title: "Lab 4: a raw-socket TCP responder"
    lessons:
      - name: handshake                 # [a-z0-9-], unique
        points: 20                      # >= 0
        checks: "The SYN+ACK acknowledges the SYN ..."   # one sentence, shown on the card
        scenario: lab4/handshake.scn    # relative to the rubric file (docs/scenarios.md)
      - name: ack-lost
        points: 10
        bonus: true                     # counts in the score, not in max_score
        ...

A lesson whose scenario this tcplab cannot run (a header it does not know, from a rubric
written for a newer tcplab; a backend the scenario's ``backends:`` excludes) is kept with ``unavailable``
saying why: it is graded ``n/a`` and its points count neither way.  Everything else that is
wrong in a rubric is a LabError naming the file, the lesson and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.judge import scenario as scenario_format
from harness.judge.scenario import Scenario, ScenarioError, load_scenario
from harness.util import PROJECT_ROOT, LabError

RUBRIC_DIR = PROJECT_ROOT / "rubrics"
DEFAULT_RUBRIC = "lab4"
KEYS = {"name", "title", "lessons"}
LESSON_KEYS = {"name", "points", "checks", "scenario", "bonus"}
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


@dataclass(frozen=True)
class Lesson:
    name: str
    points: int
    checks: str
    scenario_path: Path
    bonus: bool = False
    scenario: Scenario | None = None
    unavailable: str = ""            # why this tcplab cannot run it ("" if it can)


@dataclass(frozen=True)
class Rubric:
    name: str
    title: str
    path: Path
    lessons: tuple

    def max_score(self, backend: str | None = None) -> int:
        """Points of the lessons that count (not bonus, available[, on ``backend``])."""
        return sum(l.points for l in self.lessons
                   if not l.bonus and not why_not(l, backend))


def why_not(lesson: Lesson, backend: str | None) -> str:
    """Why ``lesson`` cannot be graded (on ``backend``), or ""."""
    if lesson.unavailable:
        return lesson.unavailable
    if backend and lesson.scenario is not None and not lesson.scenario.runs_on(backend):
        return (f"its scenario holds on {', '.join(lesson.scenario.backends)} only, not on "
                f"{backend} (backends: in {lesson.scenario.filename})")
    return ""


def rubric_path(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yml", ".yaml") or p.exists():
        return p
    return RUBRIC_DIR / f"{name_or_path}.yml"


def list_rubrics() -> list[str]:
    return sorted(p.stem for p in RUBRIC_DIR.glob("*.yml"))


def _unknown_header(path: Path) -> str:
    """A header key this tcplab's scenario format does not know yet (e.g. ``clients``)."""
    known = set(scenario_format.HEADER_KEYS) | {"expect"}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"([A-Za-z_-]+)\s*:", line)
        if line.strip() == "expect:":
            break
        if m and m.group(1) not in known:
            return m.group(1)
    return ""


def _lesson(path: Path, i: int, raw) -> Lesson:
    where = f"{path}: lesson {i}"
    if not isinstance(raw, dict):
        raise LabError(f"{where}: expected a mapping (name, points, checks, scenario)")
    where = f"{path}: lesson {raw.get('name', i)!s}"
    bad = set(raw) - LESSON_KEYS
    if bad:
        raise LabError(f"{where}: unknown field(s) {', '.join(sorted(bad))} "
                       f"(known: {', '.join(sorted(LESSON_KEYS))})")
    for key in ("name", "points", "checks", "scenario"):
        if key not in raw:
            raise LabError(f"{where}: missing field '{key}'")
    name, points = raw["name"], raw["points"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LabError(f"{where}: field 'name': lowercase letters, digits and '-', got {name!r}")
    if not isinstance(points, int) or isinstance(points, bool) or points < 0:
        raise LabError(f"{where}: field 'points': a whole number >= 0, got {points!r}")
    if not isinstance(raw["checks"], str) or not raw["checks"].strip():
        raise LabError(f"{where}: field 'checks': one sentence of what the lesson checks")
    if not isinstance(raw.get("bonus", False), bool):
        raise LabError(f"{where}: field 'bonus': true or false")
    scn_path = (path.parent / str(raw["scenario"])).resolve()
    if not scn_path.is_file():
        raise LabError(f"{where}: field 'scenario': no file {scn_path}")
    unknown = _unknown_header(scn_path)
    if unknown:
        return Lesson(name, points, raw["checks"].strip(), scn_path, raw.get("bonus", False),
                      None, f"needs the scenario header '{unknown}:', which this tcplab's "
                            f"scenario format does not have yet")
    try:
        scn = load_scenario(scn_path)
    except ScenarioError as e:
        raise LabError(f"{where}: bad scenario: {e}") from None
    return Lesson(name, points, raw["checks"].strip(), scn_path, raw.get("bonus", False), scn)


def load_rubric(name_or_path) -> Rubric:
    """The rubric called ``name`` (``rubrics/NAME.yml``) or at a path; LabError if bad."""
    path = rubric_path(name_or_path)
    if not path.is_file():
        raise LabError(f"no rubric {str(name_or_path)!r} (no {path}); known rubrics: "
                       f"{', '.join(list_rubrics()) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LabError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("lessons"), list) \
            or not data["lessons"]:
        raise LabError(f"{path}: expected 'name', 'title' and a non-empty list 'lessons'")
    bad = set(data) - KEYS
    if bad:
        raise LabError(f"{path}: unknown key(s) {', '.join(sorted(bad))} "
                       f"(known: {', '.join(sorted(KEYS))})")
    lessons = tuple(_lesson(path, i, raw) for i, raw in enumerate(data["lessons"], 1))
    names = [l.name for l in lessons]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabError(f"{path}: lesson name(s) given twice: {', '.join(dup)}")
    return Rubric(str(data.get("name") or path.stem), str(data.get("title") or path.stem),
                  path, lessons)
