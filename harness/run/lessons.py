"""``invoke lessons``: every shipped lesson that applies to a backend, one table.

:func:`run_lessons` takes a lab (a backend that is up) and a list of scenario names, runs each
with :func:`harness.run.demo.run_demo` (one run folder each), and returns one
:class:`LessonResult` per name: passed, failed, skipped (the scenario's ``backends:`` leaves this
backend out, or the backend cannot drive its client -- never a failure) or error (the lab
failed during the run).  :func:`format_table` prints them.

:func:`run_jobs` runs many demos on a :class:`harness.lab.pool.LabPool` (``invoke lessons
--labs N``, the scenario tests, grading): each job leases a lab, runs, gives the lab back
clean; as many at once as the pool has labs.  A scenario marked ``cpu: alone`` (its timing
bounds do not survive sharing this machine's CPU with other demos: measured, see
docs/scenarios.md) runs afterwards, one at a time, with nothing else running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.judge.scenario import display_path, list_scenarios
from harness.lab import Backend
from harness.run.demo import RUNS_DIR, load, run_demo, skip_reason
from harness.util import LabError, progress, progress_tag

MARKS = {"pass": "✓", "fail": "✗", "error": "✗", "skipped": "skipped"}


@dataclass
class LessonResult:
    name: str
    status: str                 # "pass", "fail", "skipped" or "error"
    reason: str = ""
    seconds: float | None = None
    run_dir: Path | None = None
    lab: str = ""               # the lab it ran on
    result: object = None       # the run's DemoResult (None when skipped or on an error)

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


def _one(backend: Backend, name: str, runs_dir: Path, run: Callable, scenario: str = "",
         **kw) -> LessonResult:
    """Job ``name`` (scenario ``scenario``, default the same) with ``run``'s keywords ``kw``."""
    scenario = scenario or name
    try:
        why = skip_reason(load(scenario), backend)
    except LabError as e:
        return LessonResult(name, "error", str(e), lab=backend.prefix)
    if why:
        return LessonResult(name, "skipped", why, lab=backend.prefix)
    t0 = time.monotonic()
    try:
        res = run(backend, scenario, runs_dir=runs_dir, **kw)
    except LabError as e:
        return LessonResult(name, "error", str(e), time.monotonic() - t0, lab=backend.prefix)
    return LessonResult(name, "pass" if res.ok else "fail", "" if res.ok else res.reason,
                        time.monotonic() - t0, res.run_dir, backend.prefix, res)


@dataclass
class Job:
    """One demo to run on a pool's lab: ``name`` (its key in the results, e.g. the lesson, or
    ``hello[wrong-seq]``), the scenario, and ``run_demo``'s keywords (``fault=``,
    ``responder=``, ``launcher=`` ...)."""

    name: str
    scenario: str = ""
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.scenario = self.scenario or self.name


def cpu_alone(scenario: str) -> bool:
    """Must ``scenario`` have the CPU to itself (its header says ``cpu: alone``)?  A scenario
    that does not load is not alone (its error is reported when it runs)."""
    try:
        return bool(getattr(load(scenario), "cpu_alone", False))
    except LabError:
        return False


def run_jobs(pool, jobs: list, *, runs_dir: Path = RUNS_DIR, run: Callable = run_demo,
             log=progress) -> dict[str, LessonResult]:
    """Run ``jobs`` (:class:`Job` or scenario names) on ``pool``'s labs, as many at once as it
    has labs; the ``cpu: alone`` ones afterwards, one at a time, nothing else running.  Each
    job leases a lab and releases it (cleaned) when done.  Returns {name: LessonResult} in the
    order of ``jobs``; one job's error never stops the others."""
    jobs = [j if isinstance(j, Job) else Job(j) for j in jobs]
    if len({j.name for j in jobs}) != len(jobs):
        raise LabError("run_jobs: two jobs with the same name")
    alone = {j.name for j in jobs if cpu_alone(j.scenario)}
    results: dict = {}
    done = [0]
    lock = threading.Lock()

    def work(job: Job) -> None:
        try:
            with pool.leased() as lab, progress_tag(lab.prefix):
                res = _one(lab, job.name, runs_dir, run, job.scenario, **job.kwargs)
        except LabError as e:                   # no lab could be leased
            res = LessonResult(job.name, "error", str(e))
        except Exception as e:                  # noqa: BLE001 -- one job's bug is its error
            res = LessonResult(job.name, "error", f"{type(e).__name__}: {e}")
        with lock:
            results[job.name] = res
            done[0] += 1
            shown = f" ({res.seconds:.1f} s)" if res.seconds is not None else ""
            log(f"{job.name} [{res.lab or '-'}] {done[0]}/{len(jobs)}: {MARKS[res.status]}"
                f"{shown}{': ' + res.reason if res.status != 'pass' else ''}")
    shared = [j for j in jobs if j.name not in alone]
    queue = list(shared)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            work(job)
    threads = [threading.Thread(target=worker, name=f"jobs-{i}", daemon=True)
               for i in range(min(pool.size, len(shared)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if alone:
        log(f"now alone, one at a time (cpu: alone): {', '.join(sorted(alone))}")
    for job in jobs:
        if job.name in alone:
            work(job)
    return {j.name: results[j.name] for j in jobs}


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
