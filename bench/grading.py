"""Item 8 of ``invoke bench``, ``grading`` (issue 11, item 6) -- figures, never a timed test.

* :func:`warm_submission`: one submission (the lecture's ``naive.c``, built in the sandbox)
  graded with the lab-4 rubric on a netns lab that is already up and provisioned (the lab's
  making is not counted); the same-run reference is the rubric's lessons run on the same lab
  as plain demos of tcplab's own responder, so the ratio is what grading adds (a build, a
  sandbox, the probe agent, the card).  Target: the grading itself <= 30 s.
* :func:`class_ratio`: a class of N submissions (cycling through naive.c, badsum.py and tcplab's
  own responder) graded with ``--jobs J`` and, as the reference, with ``--jobs 1``, in the same
  run.  Target for 12 with --jobs 4 on 2 cores: wall-time ratio <= 0.5 (most of a lesson is
  waiting: the client's pauses, the capture, the close).  Each job makes its own lab today
  (:func:`harness.grade.klass.job_lab`), so lab making is in both figures.

``item(quick)`` is what the bench runs (``--quick``, when ``--only`` names the item: the
one-lesson rubric, one round, a class of 2 with --jobs 2, no targets).  ``python -m
bench.grading [--quick] [--json FILE]`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.grade.grader import grade_on, make_grade_dir, new_grade_prefix
from harness.grade.klass import grade_class
from harness.grade.rubric import load_rubric, why_not
from harness.grade.submission import tcplab_as_submission
from harness.lab import get_backend
from harness.lab.provision import bring_up
from harness.run.demo import run_demo
from harness.util import PROJECT_ROOT, progress, require_root

SUBS = PROJECT_ROOT / "tests" / "submissions"
ONE_LESSON = SUBS / "one-lesson.yml"
CLASS_MIX = ("naive.c", "badsum.py", "tcplab")
#: Issue 11's targets, for the full item's settings only.
WARM_TARGET_S = 30.0
CLASS_TARGET_RATIO = 0.5
FULL = {"rubric": "lab4", "rounds": 2, "class_n": 12, "jobs": 4, "class_rubric": "lab4"}
QUICK = {"rubric": str(ONE_LESSON), "rounds": 1, "class_n": 2, "jobs": 2,
         "class_rubric": str(ONE_LESSON)}


def make_class(dest: Path, n: int) -> Path:
    """``n`` submissions, cycling through :data:`CLASS_MIX` (student01-naive.c, ...)."""
    dest.mkdir(parents=True)
    for i in range(n):
        kind = CLASS_MIX[i % len(CLASS_MIX)]
        target = dest / f"student{i + 1:02d}-{kind}"
        if kind == "tcplab":
            tcplab_as_submission(target)
        else:
            shutil.copy(SUBS / kind, target)
    return dest


def _demos(lab, rubric, runs_dir: Path) -> float:
    """The rubric's lessons as demos of tcplab's own responder on ``lab``: wall seconds."""
    t0 = time.monotonic()
    for lesson in rubric.lessons:
        if not why_not(lesson, lab.name):
            run_demo(lab, str(lesson.scenario_path), runs_dir=runs_dir)
    return round(time.monotonic() - t0, 2)


def warm_submission(submission: Path = SUBS / "naive.c", rubric="lab4", rounds: int = 1,
                    log=progress) -> dict:
    """Grade ``submission`` on a warm netns lab, ``rounds`` times, each round after the same
    lessons as tcplab demos (the reference); the lab's making is not counted."""
    require_root("the grading bench")
    rub = load_rubric(rubric)
    lab = get_backend("netns", new_grade_prefix())
    out = {"submission": submission.name, "rubric": rub.name, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-grade-") as tmp, lab.locked():
        try:
            t0 = time.monotonic()
            bring_up(lab)
            out["lab_up_s"] = round(time.monotonic() - t0, 2)
            for r in range(rounds):
                log(f"bench: grading round {r + 1}/{rounds}: the lessons as demos, then "
                    f"{submission.name}")
                demos = _demos(lab, rub, Path(tmp) / "demos")
                gdir = make_grade_dir(Path(tmp), submission.name)
                t0 = time.monotonic()
                g = grade_on(lab, submission, rub, gdir)
                out["rounds"].append({
                    "grade_s": round(time.monotonic() - t0, 2), "demos_s": demos,
                    "score": g["score"],
                    "lessons": {l["lesson"]: l["seconds"] for l in g["lessons"]}})
        finally:
            lab.down()
    return out


def class_ratio(n: int = 12, jobs: int = 4, rubric="lab4") -> dict:
    """Wall time of a class of ``n`` with ``--jobs jobs``, and the same with ``--jobs 1``."""
    require_root("the grading bench")
    out = {"n": n, "jobs": jobs, "rubric": load_rubric(rubric).name}
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-class-") as tmp:
        cls = make_class(Path(tmp) / "class", n)
        for j in (jobs, 1):
            t0 = time.monotonic()
            grades, _ = grade_class(cls, jobs=j, rubric=rubric, out_dir=Path(tmp) / f"j{j}")
            out[f"jobs{j}_s"] = round(time.monotonic() - t0, 1)
            out[f"jobs{j}_scores"] = sorted((g["submission"], g["score"]) for g in grades)
    out["same_scores"] = out[f"jobs{jobs}_scores"] == out["jobs1_scores"]
    return out


def item(quick: bool = False, log=progress) -> dict:
    """Item 7 as the bench runs it (``quick``: the one-lesson rubric, one round, a class of
    2)."""
    p = QUICK if quick else FULL
    return {"warm": warm_submission(rubric=p["rubric"], rounds=p["rounds"], log=log),
            "class": class_ratio(p["class_n"], p["jobs"], p["class_rubric"]),
            "targets": not quick}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grading", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="also write the figures to this file")
    o = p.parse_args(argv)
    text = json.dumps(item(o.quick), indent=2)
    print(text)
    if o.json:
        Path(o.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
