"""``invoke grade SUBMISSION``: one submission, every lesson of a rubric, on a lab of its own.

1. the rubric is read (:mod:`harness.grade.rubric`) and a lab made with a fresh prefix
   (removed at the end, also on failure, Ctrl-C or SIGTERM);
2. the submission is copied into a work directory and built in the sandbox
   (:mod:`harness.grade.submission`); the build log is kept;
3. for each lesson its scenario runs with :func:`harness.run.demo.run_demo` and the
   submission's launcher (:mod:`harness.grade.launcher`): the program is started afresh, the
   real client runs on the host side, tshark captures, the matcher judges;
4. each lesson gets a status: ``pass``, ``fail`` (the first mismatch in words), ``error`` (the
   program exited or crashed during the lesson, ignored SIGTERM, hit its process limit, never
   opened a raw socket, was not built, or the submission's time ran out) or ``n/a`` (this
   tcplab cannot run the lesson here; its points count neither way);
5. the report card (``grade.json``, ``report.html``, ``junit.xml``) goes to
   ``grades/<time>-<name>/`` (:mod:`harness.report.card`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness.grade.launcher import GRACE, ProgramError, SubmissionLauncher, describe_status, \
    stderr_tail, upload
from harness.grade.rubric import DEFAULT_RUBRIC, Rubric, load_rubric, why_not
from harness.grade.sandbox import RUN_LIMITS, require_sandbox_tools, sandbox_uid
from harness.grade.submission import Prepared, prepare
from harness.lab import get_backend
from harness.lab.provision import bring_up
from harness.run.ssh import LabSSH
from harness.util import PROJECT_ROOT, LabError, progress

GRADES_DIR = PROJECT_ROOT / "grades"
#: Wall-clock seconds of lessons one submission may use; lessons left after it are errors.
SUBMISSION_BUDGET = 300.0
GUEST_WORKDIR = "/root/tcplab-grade"
ISOLATION = {
    "netns": "sandbox on this machine: its own unprivileged uid with only CAP_NET_RAW, a "
             "read-only filesystem but its work directory and a private /tmp, its own PID "
             "namespace, resource limits (bubblewrap, setpriv, prlimit)",
    "qemu": "root inside the QEMU guest, under resource limits: the guest (its own kernel, "
            "disk and memory) is the isolation",
    "vagrant": "root inside the Vagrant VM, under resource limits: the VM is the isolation",
}


def new_grade_prefix() -> str:
    return "g" + uuid.uuid4().hex[:9]


def make_grade_dir(out_dir: Path, name: str) -> Path:
    """``out_dir/<UTC time>-<name>``, made atomically (``~2``, ``~3`` ... if taken)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        d = out_dir / (f"{stamp}-{safe}" + (f"~{n}" if n > 1 else ""))
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise LabError(f"cannot make a grade folder under {out_dir}")


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt, as Ctrl-C does: every ``finally`` runs,
    every lab made is removed."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def lesson_why(failures: list) -> str:
    """The first mismatch in words, with the other differences of that same packet."""
    if not failures:
        return ""
    first = failures[0]
    m = re.match(r"(.*?: packet \d+ \([^)]*\): )", first)
    if not m:
        return first
    more = [f[len(m.group(1)):] for f in failures[1:] if f.startswith(m.group(1))
            and not re.search(r" \(\+\d+ more\)$", f)]      # (the verdict's own summary)
    return "; ".join([first, *more])


def _lesson_entry(lesson, status: str, why: str = "", **extra) -> dict:
    return {"lesson": lesson.name, "status": status,
            "points": lesson.points if status == "pass" else 0,
            "max_points": lesson.points, "bonus": lesson.bonus, "why": why,
            "checks": lesson.checks, "scenario": lesson.scenario_path.name,
            "notes": [], "files": {}, "seconds": 0.0, **extra}


def _files(gdir: Path, ldir: Path) -> dict:
    runs = sorted(p for p in ldir.iterdir() if p.is_dir()) if ldir.is_dir() else []
    out = {}
    for p in (ldir / "program.out", ldir / "program.err"):
        if p.exists():
            out[p.stem + "_" + p.suffix[1:]] = str(p.relative_to(gdir))
    if runs:
        run = runs[-1]
        for key, name in (("pcap", "capture.pcapng"), ("transcript", "transcript.txt"),
                          ("ladder", "ladder.svg"), ("result", "result.json")):
            if (run / name).exists():
                out[key] = str((run / name).relative_to(gdir))
    return out


def _judge_run(res, launcher) -> tuple[str, str]:
    """(status, why) of one lesson from the run's verdict and what the program did."""
    f = launcher.facts
    why = "" if res.ok else lesson_why(res.verdict.failures if res.verdict is not None
                                       else [res.reason])
    exchange = f"; the exchange: {why}" if why else ""
    if f.exited is not None:
        tail = stderr_tail(f.stderr)
        return "error", (f"the program {describe_status(f.exited)} during the lesson"
                         + (f" ({tail})" if tail else "") + exchange)
    if f.killed:
        return "error", (f"the program did not exit within {GRACE:g} s of SIGTERM and was "
                         f"killed{exchange}")
    if f.processes >= launcher.limits.nproc:
        return "error", (f"the program reached its limit of {launcher.limits.nproc} processes "
                         f"(a fork bomb?){exchange}")
    return ("pass", "") if res.ok else ("fail", why)


def _run_lesson(backend, lesson, launcher, gdir: Path) -> tuple[dict, str]:
    """One lesson; (its entry, a reason the next lessons cannot run either, or "")."""
    from harness.run.demo import run_demo
    ldir = gdir / "lessons" / lesson.name
    ldir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    fatal = ""
    try:
        res = run_demo(backend, str(lesson.scenario_path), launcher=launcher, runs_dir=ldir)
        status, why = _judge_run(res, launcher)
        notes = list(res.verdict.not_applicable) if res.verdict else []
    except ProgramError as e:
        status, why, notes = "error", f"the program did not start: {e}", []
        fatal = str(e)
    (ldir / "program.out").write_text(launcher.facts.stdout)
    (ldir / "program.err").write_text(launcher.facts.stderr)
    entry = _lesson_entry(lesson, status, why, notes=notes, files=_files(gdir, ldir),
                          seconds=round(time.monotonic() - t0, 2))
    return entry, fatal


def _launcher(backend, prep: Prepared, uid: int) -> SubmissionLauncher:
    if backend.name == "netns":
        return SubmissionLauncher(prep.command, str(prep.workdir), sandbox_uid=uid,
                                  label=f"submission {prep.name}")
    with LabSSH(backend.ssh_endpoint()) as ssh:
        upload(ssh, prep.workdir, GUEST_WORKDIR)
    return SubmissionLauncher(prep.command, GUEST_WORKDIR, sandbox_uid=None,
                              label=f"submission {prep.name}")


def _vm_machine(backend) -> str:
    if backend.name == "netns":
        return os.uname().machine
    with LabSSH(backend.ssh_endpoint()) as ssh:
        return ssh.run("uname -m").stdout.strip()


def grade_on(backend, src: Path, rubric: Rubric, gdir: Path,
             budget: float = SUBMISSION_BUDGET) -> dict:
    """Grade ``src`` on the provisioned lab ``backend``; the grade as a dict (grade.json)."""
    netns = backend.name == "netns"
    if netns:
        require_sandbox_tools()
    uid = sandbox_uid(backend.prefix)
    t0 = time.monotonic()
    prep = prepare(src, backend.state_dir / "grade" / "work", uid=uid,
                   machine=_vm_machine(backend), static=not netns)
    (gdir / "build.log").write_text(prep.build_log or f"(nothing to build: {prep.error})\n")
    progress(f"{src.name}: " + ("built: " + prep.how if prep.built else prep.error))
    launcher = _launcher(backend, prep, uid) if prep.built else None
    lessons, fatal = [], "" if prep.built else prep.error
    for lesson in rubric.lessons:
        na = why_not(lesson, backend.name)
        if na:
            entry = _lesson_entry(lesson, "n/a", na)
        elif fatal:
            entry = _lesson_entry(lesson, "error", f"not run: {fatal}")
        elif time.monotonic() - t0 > budget:
            entry = _lesson_entry(lesson, "error", f"not run: the submission's time limit "
                                                    f"({budget:g} s) ran out")
        else:
            entry, fatal = _run_lesson(backend, lesson, launcher, gdir)
        progress(f"{src.name}: lesson {lesson.name}: {entry['status']}"
                 + (f" — {entry['why'][:150]}" if entry["why"] else ""))
        lessons.append(entry)
    counted = [l for l in lessons if l["status"] != "n/a"]
    return {
        "submission": src.name, "path": str(src.resolve()), "kind": prep.kind,
        "rubric": rubric.name, "rubric_title": rubric.title, "backend": backend.name,
        "prefix": backend.prefix, "built": prep.built,
        "build": {"how": prep.how, "error": prep.error, "log": "build.log"},
        "isolation": ISOLATION.get(backend.name, ""),
        "limits": RUN_LIMITS.describe() + f"; {budget:g} s of lessons in all",
        "score": sum(l["points"] for l in lessons),
        "max_score": sum(l["max_points"] for l in counted if not l["bonus"]),
        "bonus_max": sum(l["max_points"] for l in counted if l["bonus"]),
        "lessons": lessons,
        "seconds": round(time.monotonic() - t0, 1),
    }


def grade(submission, *, rubric=DEFAULT_RUBRIC, backend: str = "netns",
          prefix: str | None = None, out_dir: Path = GRADES_DIR,
          budget: float = SUBMISSION_BUDGET, leased: bool = False) -> tuple[dict, Path]:
    """Grade one submission on a lab of its own; (grade, its folder).  LabError for what
    makes grading impossible (no such file, unknown rubric, a lab that cannot be made).

    ``leased``: grade on lab ``prefix`` as it is -- a lab a class run leased from its pool
    (:mod:`harness.grade.klass`), which holds the lab's lock and cleans the lab afterwards;
    the lab is then neither made nor removed here, and it must be up and locked by that run."""
    from harness.report.card import write_card
    src = Path(submission)
    if not src.exists():
        raise LabError(f"no submission at {src}: give a .c file, a .py file or a directory")
    rub = load_rubric(rubric)
    lab = get_backend(backend, prefix or new_grade_prefix())
    if leased:
        _check_leased(lab)
    elif lab.exists():
        raise LabError(f"lab '{lab.prefix}' exists already: grading makes a lab of its own "
                       f"and removes it afterwards; give another --prefix")
    gdir = make_grade_dir(Path(out_dir), src.name.rstrip("/"))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with contextlib.nullcontext() if leased else lab.locked():
        try:
            progress(f"grading {src} with rubric {rub.name} on a {backend} lab "
                     f"'{lab.prefix}'{' (leased)' if leased else ''} -> "
                     f"{os.path.relpath(gdir)}")
            if not leased:
                bring_up(lab)
            result = grade_on(lab, src, rub, gdir, budget)
        finally:
            if not leased:
                lab.down()
    result["started"] = started
    result["grade_dir"] = str(gdir)
    write_card(gdir, result)
    return result, gdir


def _check_leased(lab) -> None:
    """A leased lab is up, and its lock is held (by the class run that leased it)."""
    if not lab.exists() or not lab.status().get("up"):
        raise LabError(f"--leased: lab '{lab.prefix}' is not up (a class run leases labs "
                       f"from its pool; grade one submission without --leased)")
    if not lab.state.held():
        raise LabError(f"--leased: nothing holds lab '{lab.prefix}' (its class run ended?): "
                       f"a leased lab is locked by the run that leased it")
