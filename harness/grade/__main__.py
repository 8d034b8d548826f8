"""``python -m harness.grade SUBMISSION --out DIR [--rubric R] [--backend B] [--prefix P
[--leased]]``: grade one submission (what each job of a class run is); prints the grade folder
on stdout.  Exit 0 when grading completed, 1 when it could not be done (one line on stderr)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.grade.grader import GRADES_DIR, SUBMISSION_BUDGET, grade, terminate_as_interrupt
from harness.grade.rubric import DEFAULT_RUBRIC
from harness.util import LabError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.grade", description=__doc__)
    p.add_argument("submission")
    p.add_argument("--out", default=str(GRADES_DIR))
    p.add_argument("--rubric", default=DEFAULT_RUBRIC)
    p.add_argument("--backend", default="netns")
    p.add_argument("--prefix")
    p.add_argument("--leased", action="store_true",
                   help="grade on lab --prefix as it is: a lab the class run that started this "
                        "job leased from its pool (it holds the lab's lock, cleans it after)")
    p.add_argument("--budget", type=float, default=SUBMISSION_BUDGET)
    o = p.parse_args(argv)
    try:
        with terminate_as_interrupt():
            _, gdir = grade(o.submission, rubric=o.rubric, backend=o.backend, prefix=o.prefix,
                            out_dir=Path(o.out), budget=o.budget, leased=o.leased)
    except LabError as e:
        print(f"tcplab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tcplab: grading interrupted; " + ("its class run cleans its lab" if o.leased
                                                 else "its lab was removed"), file=sys.stderr)
        return 130
    print(gdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
