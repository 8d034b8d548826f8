"""``invoke grade DIR --jobs N``: a class -- every submission in DIR, N at a time.

Each submission (each file or subdirectory of DIR; dot files are skipped) is graded by its own
process, ``python -m harness.grade --leased``, on a lab it leases from the run's pool
(:class:`harness.lab.pool.LabPool`: N labs made up front by one playbook run, each lab used by
one job at a time), into one class folder ``grades/<time>-class-<DIR>/``; then ``index.html``
(sortable table, a link per student) and ``grades.csv`` are written there.  One submission
cannot stall or change another's grade: each job has a lab to itself while it runs, given back
*clean* (the pool kills whatever the submission left running in the lab, restores the lab's
iptables, removes qdiscs; a lab that stays dirty is taken out of the pool and removed), its own
sandbox work directory emptied first, its sandbox uid and limits, its lessons a time budget,
and its process a hard wall-clock limit, after which it is stopped and its lab cleaned.
Ctrl-C or SIGTERM stops every job, removes the pool's labs, and writes the table of what was
graded; after ``kill -9`` of the whole run, ``invoke down --all`` is the backstop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.grade.grader import GRADES_DIR, SUBMISSION_BUDGET, make_grade_dir
from harness.grade.rubric import DEFAULT_RUBRIC, load_rubric
from harness.grade.submission import MAKEFILES, RUN_SCRIPT, BINARY
from harness.lab.pool import LabPool
from harness.util import PROJECT_ROOT, LabError, progress

#: Seconds a job may take beyond its lessons' budget (lab up and down, build, card).
JOB_SLACK = 180.0
STOP_GRACE = 20.0


def is_class_dir(path: Path) -> bool:
    """A directory is one submission if it has a Makefile, ``run`` or ``responder``; else it
    is a class of submissions."""
    return path.is_dir() and not any((path / n).exists()
                                     for n in (*MAKEFILES, RUN_SCRIPT, BINARY))


def submissions(path: Path) -> list[Path]:
    subs = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not subs:
        raise LabError(f"{path} is empty: a class directory holds one file or directory per "
                       f"student")
    return subs


@contextlib.contextmanager
def job_lab(pool):
    """The lab one job grades on -- the one place a class run decides about labs.  Leases a
    lab from ``pool`` and yields the arguments that tell the job (``python -m harness.grade``)
    to grade on it as it is; on leaving, the lab goes back to the pool, cleaned (LabError
    with what was left when it could not be cleaned: the pool then removes it)."""
    lab = pool.lease()
    try:
        yield ["--prefix", lab.prefix, "--leased"]
    finally:
        c = pool.release(lab)
        if not c.ok:
            raise LabError(f"lab '{lab.prefix}' could not be cleaned ({c.summary()}); "
                           f"taken out of the pool")


class _Job:
    def __init__(self, sub: Path, root: Path, rubric: str, backend: str, budget: float, pool):
        self.sub = sub
        self.log = root / f".{sub.name}.log"
        self.deadline = time.monotonic() + budget + JOB_SLACK
        self.error = ""
        self._lab = contextlib.ExitStack()
        lab_args = self._lab.enter_context(job_lab(pool))
        argv = [sys.executable, "-m", "harness.grade", str(sub), "--out", str(root),
                "--rubric", rubric, "--backend", backend, *lab_args, "--budget", str(budget)]
        try:
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                             cwd=PROJECT_ROOT, text=True)
        except BaseException:
            self._lab.close()
            raise

    def stop(self, why: str) -> None:
        """SIGTERM (the job stops its program), SIGKILL after a grace, then its lab given back
        to the pool (cleaned)."""
        self.error = self.error or why
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = self.release()
        if left:
            self.error += f" (and {left})"

    def release(self) -> str:
        """Let go of its lab (job_lab's leaving); what went wrong, or ""."""
        try:
            self._lab.close()
        except LabError as e:
            return str(e)
        return ""

    def result(self, max_score: int) -> dict:
        out = self.proc.stdout.read() if self.proc.stdout else ""
        lines = out.strip().splitlines()
        gdir = Path(lines[-1]) if lines else None
        if not self.error and self.proc.returncode == 0 and gdir \
                and (gdir / "grade.json").is_file():
            return json.loads((gdir / "grade.json").read_text())
        tail = [l for l in self.log.read_text(errors="replace").splitlines() if l.strip()]
        why = self.error or (tail[-1] if tail else f"exit {self.proc.returncode}")
        return {"submission": self.sub.name, "score": 0, "max_score": max_score,
                "built": False, "lessons": [], "error": why, "grader_failed": not self.error}


def grade_class(path, *, jobs: int = 1, rubric=DEFAULT_RUBRIC, backend: str = "netns",
                out_dir: Path = GRADES_DIR, budget: float = SUBMISSION_BUDGET):
    """Grade every submission in ``path``, ``jobs`` at a time; (grades, class folder)."""
    from harness.report.card import write_class
    path = Path(path)
    if not path.is_dir():
        raise LabError(f"no class directory at {path}")
    rub = load_rubric(rubric)
    subs = submissions(path)
    root = make_grade_dir(Path(out_dir), f"class-{path.resolve().name}")
    jobs = max(1, min(jobs, len(subs)))
    progress(f"grading {len(subs)} submissions from {path}, {jobs} at a time -> "
             f"{os.path.relpath(root)}")
    done = []
    try:
        with LabPool(jobs, backend=backend, tag="gr") as pool:
            if pool.failures:
                progress(f"the pool has {len(pool.labs())} of {jobs} labs: " + "; ".join(
                    f"{p}: {e}" for p, e in pool.failures.items()))
            _run_jobs(subs, root, rub, backend, budget, pool, done)
    finally:
        write_class(root, done, f"{rub.title} — {path.resolve().name}")
    return done, root


def _run_jobs(subs, root, rub, backend, budget, pool, done) -> None:
    """Start a job whenever a lab of the pool is free; collect each job's grade in ``done``."""
    pending, running = list(subs), []
    try:
        while pending or running:
            labs = len(pool.labs())
            if not labs and not running:
                raise LabError("no lab left to grade on: " + "; ".join(
                    f"{p}: {e}" for p, e in pool.failures.items()))
            while pending and len(running) < labs:
                running.append(_Job(pending.pop(0), root, str(rub.path), backend, budget,
                                    pool))
            time.sleep(0.2)
            for job in list(running):
                if job.proc.poll() is None and time.monotonic() > job.deadline:
                    job.stop(f"grading took longer than {budget + JOB_SLACK:g} s: stopped")
                if job.proc.poll() is not None:
                    left = job.release()
                    if left:
                        progress(f"{job.sub.name}: {left}")
                    running.remove(job)
                    done.append(job.result(rub.max_score(backend)))
                    g = done[-1]
                    progress(f"[{len(done)}/{len(subs)}] {job.sub.name}: "
                             f"{g['score']}/{g['max_score']}"
                             + (f" — {g['error']}" if g.get("error") else ""))
    except KeyboardInterrupt:
        progress(f"interrupted: stopping {len(running)} job(s); the pool's labs are removed")
        for job in running:
            job.stop("interrupted")
            done.append(job.result(rub.max_score(backend)))
        raise
