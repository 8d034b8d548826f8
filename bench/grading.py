"""Grading figures (issue 11, item 6), for ``invoke bench`` -- never a timed test.

* :func:`warm_submission`: one submission graded with a rubric on a netns lab that is already
  up and provisioned (the lab's making is not counted): wall seconds, and per lesson.  Target
  for the lab-4 rubric: <= 30 s.
* :func:`class_ratio`: a class of N submissions graded with ``--jobs J`` and with ``--jobs 1``,
  in the same run; the ratio of their wall times.  Target for 12 with --jobs 4 on 2 cores:
  <= 0.5 (most of a lesson is waiting: the client's pauses, the capture, the close).

``python -m bench.grading [--quick] [--json FILE]`` runs both and prints JSON (``--quick``: the
one-lesson rubric and a class of 4 with --jobs 4; the full run: lab 4 and a class of 12).
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
from harness.grade.rubric import load_rubric
from harness.grade.submission import tcplab_as_submission
from harness.lab import get_backend
from harness.lab.provision import bring_up
from harness.util import PROJECT_ROOT, require_root

SUBS = PROJECT_ROOT / "tests" / "submissions"
ONE_LESSON = SUBS / "one-lesson.yml"
CLASS_MIX = ("naive.c", "badsum.py", "tcplab")


def make_class(dest: Path, n: int) -> Path:
    """``n`` submissions, cycling through :data:`CLASS_MIX` (student1-naive.c, ...)."""
    dest.mkdir(parents=True)
    for i in range(n):
        kind = CLASS_MIX[i % len(CLASS_MIX)]
        target = dest / f"student{i + 1:02d}-{kind}"
        if kind == "tcplab":
            tcplab_as_submission(target)
        else:
            shutil.copy(SUBS / kind, target)
    return dest


def warm_submission(submission: Path = SUBS / "naive.c", rubric="lab4") -> dict:
    """Grade ``submission`` on a warm netns lab; the lab's making is not counted."""
    require_root("the grading bench")
    rub = load_rubric(rubric)
    lab = get_backend("netns", new_grade_prefix())
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-grade-") as tmp, lab.locked():
        try:
            t0 = time.monotonic()
            bring_up(lab)
            up = time.monotonic() - t0
            gdir = make_grade_dir(Path(tmp), submission.name)
            t0 = time.monotonic()
            g = grade_on(lab, submission, rub, gdir)
            wall = time.monotonic() - t0
        finally:
            lab.down()
    return {"submission": submission.name, "rubric": rub.name, "lab_up_s": round(up, 2),
            "grade_s": round(wall, 2), "score": g["score"],
            "lessons": {l["lesson"]: l["seconds"] for l in g["lessons"]}, "target_s": 30}


def class_ratio(n: int = 12, jobs: int = 4, rubric="lab4") -> dict:
    """Wall time of a class of ``n`` with ``--jobs jobs`` over the same with ``--jobs 1``."""
    require_root("the grading bench")
    out = {"n": n, "jobs": jobs, "rubric": str(rubric)}
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-class-") as tmp:
        cls = make_class(Path(tmp) / "class", n)
        for j in (jobs, 1):
            t0 = time.monotonic()
            grades, _ = grade_class(cls, jobs=j, rubric=rubric, out_dir=Path(tmp) / f"j{j}")
            out[f"jobs{j}_s"] = round(time.monotonic() - t0, 1)
            out[f"jobs{j}_scores"] = sorted((g["submission"], g["score"]) for g in grades)
    out["ratio"] = round(out[f"jobs{jobs}_s"] / out["jobs1_s"], 3)
    out["same_scores"] = out[f"jobs{jobs}_scores"] == out["jobs1_scores"]
    out["target_ratio"] = 0.5
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grading", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="also write the figures to this file")
    o = p.parse_args(argv)
    rubric = str(ONE_LESSON) if o.quick else "lab4"
    res = {"warm": warm_submission(rubric="lab4"),
           "class": class_ratio(4 if o.quick else 12, 4, rubric)}
    text = json.dumps(res, indent=2)
    print(text)
    if o.json:
        Path(o.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
