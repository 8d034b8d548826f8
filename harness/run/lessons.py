"""``invoke lessons``: every shipped lesson that applies to a backend, one table.

:func:`run_lessons` takes a lab (a backend that is up) and a list of scenario names, runs each
with :func:`harness.run.demo.run_demo` (one run folder each), and returns one
:class:`LessonResult` per name: passed, failed, skipped (the scenario's ``backends:`` leaves this
backend out, or the backend cannot drive its client -- never a failure) or error (the lab
failed during the run).  :func:`format_table` prints them.  The runner is a plain function of a
backend and a list, so a pool of labs can later shard the list over several backends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.judge.scenario import display_path, list_scenarios
from harness.lab import Backend
from harness.run.demo import RUNS_DIR, load, run_demo, skip_reason
from harness.util import LabError, progress

MARKS = {"pass": "✓", "fail": "✗", "error": "✗", "skipped": "skipped"}


@dataclass
class LessonResult:
    name: str
    status: str                 # "pass", "fail", "skipped" or "error"
    reason: str = ""
    seconds: float | None = None
    run_dir: Path | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


def select(only: str = "") -> list[str]:
    """The shipped lessons in the lecture's order, or the comma-separated ``only`` ones (each
    must be a shipped lesson: a typo is an error naming the known ones)."""
    known = list_scenarios()
    if not only.strip():
        return known
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LabError(f"no lesson called {', '.join(repr(n) for n in unknown)}; the lessons "
                       f"are: {', '.join(known)}")
    return [n for n in known if n in names]


def run_lessons(backend: Backend, names: list[str], *, runs_dir: Path = RUNS_DIR,
                run: Callable = run_demo) -> list[LessonResult]:
    """Each lesson of ``names`` on ``backend`` in turn (``run`` is ``run_demo`` or anything
    with its signature); a LabError in one lesson is that lesson's error, and the next runs."""
    results = []
    for i, name in enumerate(names, 1):
        res = _one(backend, name, runs_dir, run)
        shown = f" ({res.seconds:.1f} s)" if res.seconds is not None else ""
        progress(f"lesson {i}/{len(names)} {name}: {MARKS[res.status]}{shown}"
                 f"{': ' + res.reason if res.status != 'pass' else ''}")
        results.append(res)
    return results


def _one(backend: Backend, name: str, runs_dir: Path, run: Callable) -> LessonResult:
    try:
        why = skip_reason(load(name), backend)
    except LabError as e:
        return LessonResult(name, "error", str(e))
    if why:
        return LessonResult(name, "skipped", why)
    t0 = time.monotonic()
    try:
        res = run(backend, name, runs_dir=runs_dir)
    except LabError as e:
        return LessonResult(name, "error", str(e), time.monotonic() - t0)
    return LessonResult(name, "pass" if res.ok else "fail", "" if res.ok else res.reason,
                        time.monotonic() - t0, res.run_dir)


def format_table(results: list[LessonResult], backend: str = "") -> str:
    """One line per lesson: name, ✓/✗/skipped, seconds, and the reason or the run folder."""
    width = max([len(r.name) for r in results] + [6])
    head = f"{'lesson':<{width}}  {'result':<7}  {'seconds':>7}  reason / run folder"
    out = [head, "-" * len(head)]
    for r in results:
        secs = f"{r.seconds:7.1f}" if r.seconds is not None else f"{'-':>7}"
        detail = r.reason if r.status != "pass" else (display_path(r.run_dir) if r.run_dir
                                                      else "")
        out.append(f"{r.name:<{width}}  {MARKS[r.status]:<7}  {secs}  {detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error",
                                                                "skipped")}
    where = f" on {backend}" if backend else ""
    out.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
               f"{counts['skipped']} skipped{where}")
    return "\n".join(out)
