"""tcplab tasks (invoke).  Thin: the logic lives in ``harness/``.

    invoke up [--backend netns] [--prefix tcplab]   make the lab and provision it (idempotent)
    invoke up --hosts INVENTORY [--labs N]          labs on remote lab hosts (Ansible inventory)
    invoke up --labs 8                              make tcplab1..tcplab8, one Ansible run
    invoke down [--prefix tcplab] [--all]           remove everything the lab (or every lab) made
    invoke down --all --hosts INVENTORY             every lab on those lab hosts
    invoke status [--json] [--all]                  what exists, does SSH answer
    invoke demo [--scenario hello]                  run a scenario end to end and check it
    invoke lessons [--backend B] [--only a,b]       run every lesson for the backend: one table
    invoke lessons --labs 4                         the same, sharded over 4 labs at once
    invoke scenarios                                the lessons: every scenario, one line each
    invoke doctor                                   check the lab piece by piece, explain failures
    invoke test [--quick]                           the test suite (pytest)
    invoke bench [--quick]                          the responder and the lab vs references
    invoke grade SUBMISSION [--rubric lab4]         grade anyone's responder: a report card

Run as root (``sudo .venv/bin/invoke ...``); ``./bootstrap TASK`` installs first, then runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, Task, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from harness.lab import BACKENDS, DEFAULT_PREFIX  # noqa: E402
from harness.util import LabError  # noqa: E402
from responder.contract import FAULTS  # noqa: E402

LAB_BACKEND_HELP = f"lab backend: {', '.join(BACKENDS)} (default: the one that made the lab, " \
                   f"netns for a new one)"
PREFIX_HELP = f"lab name, 1-10 lowercase letters/digits (default {DEFAULT_PREFIX}); " \
              f"several labs can exist at once"
PROVIDER_HELP = ("with --backend vagrant: virtualbox or libvirt (default: virtualbox when "
                 "VBoxManage exists, else libvirt)")
HOSTS_HELP = ("an Ansible inventory (YAML or INI) of lab hosts: Linux machines reached over SSH "
              "as root (or passwordless sudo) that hold the labs; each lab is the netns lab on "
              "its lab host, named PREFIX1, PREFIX2, ... (docs/backends.md, 'Lab hosts')")


class _NoShortH(Task):
    """A task whose options never take ``-h`` (``--hosts`` would, and ``-h`` is --help)."""

    def arg_opts(self, name, default, taken_names):
        return super().arg_opts(name, default, set(taken_names) | {"h"})


def _provider(backend: str, provider: str | None) -> dict:
    if provider and backend != "vagrant":
        raise Exit("tcplab: error: --provider goes with --backend vagrant", code=1)
    return {"provider": provider} if provider else {}


def _fail(e: Exception) -> Exit:
    return Exit(f"tcplab: error: {e}", code=1)


RUNTIME_HELP = ("the responder's interpreter in the VM: cpython (python3, default) or pypy "
                "(Debian's pypy3: on netns this machine's, ./bootstrap installs it; baked into "
                "the qemu image and the local Vagrant box; a downloaded Vagrant box gets it "
                "with apt); also $TCPLAB_RUNTIME")


def _runtime(runtime) -> None:
    """--runtime: checked, and passed on as $TCPLAB_RUNTIME to provisioning and the launcher."""
    from harness.run.responder import RUNTIME_ENV, runtime_python
    if runtime:
        try:
            runtime_python(runtime)
        except LabError as e:
            raise _fail(e)
        os.environ[RUNTIME_ENV] = runtime


def _lab(backend: str | None, prefix: str, **kw):
    """The lab ``prefix`` with the backend its record names (or ``backend``, checked)."""
    from harness.lab.labs import backend_for
    try:
        return backend_for(prefix, backend, **kw)
    except LabError as e:
        raise _fail(e)


@task(klass=_NoShortH,
      help={"backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP,
            "verbose": "show Ansible's whole output", "provider": PROVIDER_HELP,
            "runtime": RUNTIME_HELP,
            "labs": "make N labs at once, named PREFIX1..PREFIXN (e.g. --labs 8: tcplab1.."
                    "tcplab8), provisioned by ONE Ansible run; refused early when the machine "
                    "cannot hold them; with --hosts: N labs on each lab host",
            "prefixes": "comma-separated lab names to make at once, one Ansible run (instead "
                        "of --labs)",
            "hosts": HOSTS_HELP + "; with --prefix, the labs' name before the number"})
def up(c, backend=None, prefix=DEFAULT_PREFIX, verbose=False, provider=None, runtime=None,
       labs=None, prefixes="", hosts=None):
    """Make the lab (host side, VM, SSH) and provision it with Ansible; idempotent.

    With --labs N or --prefixes a,b,c: many labs, one playbook run over all of them; each lab
    is reported on its own line (a lab that fails is named with what failed; the others are
    still made); exit 1 if any failed.

    With --hosts INVENTORY: labs on the inventory's lab hosts (--labs N on each, default 1),
    all made and provisioned by one Ansible run; a lab host that is unreachable or lacks root
    is named with what to fix, and the others go on (exit 1 if any failed).

    qemu: a new lab resumes the saved, provisioned guest (made first when there is none for
    this image, responder, playbook and qemu) with its own SSH keys rotated in;
    TCPLAB_QEMU_SNAPSHOT=off boots the image and runs the playbook instead.
    TCPLAB_QEMU_HOST_SIDE=here puts its host side (tap, capture, clients) in this network
    namespace, as VirtualBox's is (docs/backends.md)."""
    from harness.lab.provision import bring_up
    _runtime(runtime)
    if hosts:
        if prefixes:
            raise Exit("tcplab: error: --prefixes goes with labs on this machine; with --hosts "
                       "use --prefix and --labs", code=1)
        from harness.lab.labs import lab_count
        try:
            n = 1 if labs is None else lab_count(labs)
        except LabError as e:
            raise _fail(e)
        return _up_hosts(hosts, n, prefix, backend, provider, verbose)
    if labs is not None or prefixes:
        return _up_many(backend, prefix, labs, prefixes, verbose, provider)
    b = _lab(backend, prefix, **_provider(backend, provider))
    try:
        with b.locked():
            res = bring_up(b, verbose=verbose, force=True)
    except LabError as e:
        raise _fail(e)
    changed = res["recap"].get("changed")
    how = (f"provisioning changed {changed} thing(s)" if changed is not None else
           "the VM came up provisioned (resumed from the snapshot of a provisioned guest)")
    print(f"lab '{prefix}' is up ({b.name}): host {b.host_ip} on {b.capture_interface}, "
          f"VM {b.vm_ip}; {how}")


def _up_hosts(hosts: str, labs: int, prefix: str, backend, provider, verbose: bool) -> None:
    from harness.lab.remote import up_on_hosts
    if backend not in (None, "remote") or provider:
        raise Exit("tcplab: error: --hosts makes remote labs (--backend remote); leave out "
                   "--backend and --provider", code=1)
    try:
        res = up_on_hosts(hosts, labs, prefix, verbose=verbose)
    except LabError as e:
        raise _fail(e)
    _print_fleet(res, "up")
    if not res.ok:
        raise Exit(f"tcplab: error: {'; '.join(res.problems())}", code=1)


def _print_fleet(res, what: str) -> None:
    for host, problem in res.hosts.items():
        mine = [p for p, v in res.labs.items() if v["host"] == host]
        good = [p for p in mine if res.labs[p]["ok"]]
        if problem:
            print(f"lab host {host}: FAILED: {problem}")
        elif what == "up":
            bad = [p for p in mine if p not in good]
            print(f"lab host {host}: lab(s) {', '.join(good) or '-'} up"
                  f"{'; not: ' + ', '.join(bad) if bad else ''}")
        else:
            print(f"lab host {host}: clean (removed here: {', '.join(good) or '-'})")
    if what == "up":
        n = sum(v["ok"] for v in res.labs.values())
        print(f"{n} remote lab(s) up; run one with `invoke demo --prefix NAME`")


def _up_many(backend, prefix, labs, prefixes, verbose, provider) -> None:
    from harness.lab.labs import lab_count, lab_prefixes, parse_prefixes, up_many
    try:
        if labs is not None and prefixes:
            raise LabError("give --labs N or --prefixes a,b,c, not both")
        names = parse_prefixes(prefixes) if prefixes else lab_prefixes(prefix, lab_count(labs))
        res = up_many(names, backend, verbose=verbose, **_provider(backend, provider))
    except LabError as e:
        raise _fail(e)
    for r in res.values():
        if r.ok:
            print(f"lab '{r.prefix}' is up; provisioning changed "
                  f"{r.recap.get('changed', 0)} thing(s)")
        else:
            gone = " (removed again)" if r.removed else ""
            print(f"lab '{r.prefix}' FAILED at {r.step}{gone}: {r.error}")
    bad = [r.prefix for r in res.values() if not r.ok]
    if bad:
        raise Exit(f"tcplab: error: {len(bad)} of {len(res)} lab(s) failed: {', '.join(bad)}",
                   code=1)
    print(f"{len(res)} lab(s) up: {', '.join(res)}")


@task(klass=_NoShortH,
      help={"backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP,
            "all": "remove every lab tcplab made on this machine (found in the state root "
                   "from their lab.json records, also after kill -9); namespaces without a "
                   "record are someone else's and stay",
            "hosts": "with --all: every lab on the lab hosts of this Ansible inventory (also "
                     "those this machine has no record of), and tcplab's code there"})
def down(c, backend=None, prefix=DEFAULT_PREFIX, all_=False, hosts=None):
    """Remove every namespace, process, file and rule of the lab (fine if nothing is there)."""
    if hosts:
        return _down_hosts(hosts, all_)
    if all_:
        return _down_all()
    b = _lab(backend, prefix)
    try:
        with b.locked():
            b.down()
    except LabError as e:
        raise _fail(e)
    print(f"lab '{prefix}' is down: nothing of it is left")


def _down_hosts(hosts: str, all_: bool) -> None:
    from harness.lab.remote import down_on_hosts
    if not all_:
        raise Exit("tcplab: error: --hosts goes with --all (every lab on those lab hosts); "
                   "remove one remote lab with `invoke down --prefix NAME`", code=1)
    try:
        res = down_on_hosts(hosts)
    except LabError as e:
        raise _fail(e)
    _print_fleet(res, "down")
    if not res.ok:
        raise Exit(f"tcplab: error: {'; '.join(res.problems())}", code=1)


def _down_all() -> None:
    from harness.lab.labs import down_all
    try:
        res = down_all()
    except LabError as e:
        raise _fail(e)
    print(f"removed {len(res['removed'])} lab(s): {', '.join(res['removed']) or '-'}")
    problems = [f"{p}: busy (a tcplab command is using it)" for p in res["busy"]]
    problems += [f"{p}: {err}" for p, err in res["failed"].items()]
    if problems:
        raise Exit("tcplab: error: not removed: " + "; ".join(problems), code=1)


@task(name="status", help={"backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP,
                           "json": "print machine-readable JSON",
                           "all": "every lab tcplab made: backend, prefix, namespaces, "
                                  "sshd/VM, SSH, provisioned"})
def status_(c, backend=None, prefix=DEFAULT_PREFIX, json_=False, all_=False):
    """Say what exists of the lab (or of every lab) and whether SSH answers."""
    from harness.run.ssh import check_login
    if all_:
        return _status_all(json_)
    b = _lab(backend, prefix)
    try:
        st = b.status()
        if st.get("ssh"):
            st["ssh_login"], st["ssh_detail"] = check_login(b.ssh_endpoint())
        else:
            st["ssh_login"] = False
    except LabError as e:
        raise _fail(e)
    if json_:
        print(json.dumps(st, indent=2))
        return
    print(f"lab '{prefix}' ({b.name}): {'UP' if st.get('up') else 'not up'}")
    for k, v in st.items():
        if k not in ("up",):
            print(f"  {k}: {v}")


def _status_all(as_json: bool) -> None:
    from harness.lab.labs import format_status_all, status_all
    try:
        rows = status_all()
    except LabError as e:
        raise _fail(e)
    print(json.dumps(rows, indent=2) if as_json else format_status_all(rows))


@task(help={"scenario": "scenario name (scenarios/NAME.scn) or path (default hello)",
            "backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP, "provider": PROVIDER_HELP,
            "fault": "inject a responder fault (one of: " + ", ".join(FAULTS) + ") to see a "
                     "mismatch reported",
            "verbose": "show Ansible's whole output",
            "runtime": RUNTIME_HELP})
def demo(c, scenario="hello", backend=None, prefix=DEFAULT_PREFIX, provider=None, fault=None,
         verbose=False, runtime=None):
    """Run a scenario end to end: responder in the VM, nc on the host, capture, check.

    A scenario whose `backends:` leaves this backend out (or whose client this backend cannot
    drive) is skipped: one line, exit 0."""
    from harness.run.demo import check_fault, load, run_demo, skip_reason
    _runtime(runtime)
    b = _lab(backend, prefix, **_provider(backend, provider))
    try:
        check_fault(fault)
        why = skip_reason(load(scenario), b)
        if why:
            print(f"tcplab: skipped: scenario {scenario} on {b.name}: {why}")
            return
        with b.locked():
            res = run_demo(b, scenario, fault=fault, verbose=verbose)
    except LabError as e:
        raise _fail(e)
    print("--- what the client received " + "-" * 42)
    print(res.client_output.decode(errors="replace").replace("\0", "\\0"))
    print("--- transcript (tcpdump -n -vx) " + "-" * 40)
    print((res.run_dir / "transcript.txt").read_text())
    print("--- check " + "-" * 62)
    print(res.summary)
    print(f"run folder: {os.path.relpath(res.run_dir)}")
    if not res.ok:
        raise Exit(f"tcplab: MISMATCH: {res.reason}", code=1)
    print(f"tcplab: MATCH: scenario {res.scenario} passed")


@task(help={"backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP, "provider": PROVIDER_HELP,
            "only": "comma-separated lesson names (default: every shipped lesson), e.g. "
                    "hello,miniweb",
            "verbose": "show Ansible's whole output",
            "labs": "run the lessons on N labs at once (PREFIX1..PREFIXN, made with one "
                    "Ansible run unless they exist); lessons marked `cpu: alone` run "
                    "afterwards, one at a time; same verdicts as one by one",
            "keep": "with --labs: keep the labs this run made (default: removed at the end)"})
def lessons(c, backend=None, prefix=DEFAULT_PREFIX, provider=None, only="", verbose=False,
            labs=None, keep=False):
    """Run every shipped lesson that applies to the backend; print one table; exit 1 on a failure.

    Brings the lab up (idempotent) and holds it for the whole run.  Each lesson is a demo with
    its own run folder under runs/.  A lesson whose scenario leaves this backend out
    (`backends:`), or whose client the backend cannot drive (on VirtualBox the Scapy peer's RST
    rule goes into this machine's iptables: it needs root on Linux), is skipped with the
    reason, never failed.  With --labs N the lessons are sharded over a pool of N labs: each
    lesson leases a lab and gives it back clean (no process, iptables rule or qdisc of its run
    left)."""
    from harness.lab.labs import lab_count
    from harness.run.lessons import format_table, select
    try:
        names = select(only)
        if labs is not None:
            if provider:
                raise LabError("--provider goes with one lab; --labs makes netns or qemu labs")
            results, name = _lessons_on_pool(backend, prefix, lab_count(labs), names, keep,
                                             verbose)
        else:
            results, name = _lessons_on_one(backend, prefix, provider, names, verbose)
    except LabError as e:
        raise _fail(e)
    print(format_table(results, backend=name))
    bad = [r.name for r in results if r.failed]
    if bad:
        raise Exit(f"tcplab: lessons: {len(bad)} of {len(results)} failed: {', '.join(bad)}",
                   code=1)
    print(f"tcplab: lessons: every lesson for {name} passed")


def _lessons_on_one(backend, prefix, provider, names, verbose):
    from harness.lab.provision import bring_up
    from harness.run.lessons import run_lessons
    b = _lab(backend, prefix, **_provider(backend, provider))
    with b.locked():
        bring_up(b, verbose=verbose)
        return run_lessons(b, names), b.name


def _lessons_on_pool(backend, prefix, n, names, keep, verbose):
    from harness.lab.labs import lab_prefixes
    from harness.lab.pool import LabPool
    from harness.run.lessons import run_jobs
    with LabPool(n, backend=backend or "netns", prefixes=lab_prefixes(prefix, n), keep=keep,
                 verbose=verbose) as pool:
        results = run_jobs(pool, names)
        name = pool.labs()[0].name if pool.labs() else (backend or "netns")
    return list(results.values()), name


@task
def scenarios(c):
    """List the scenarios (the lessons), one line each; run one with invoke demo --scenario NAME."""
    from harness.judge.scenario import format_lessons
    print(format_lessons())


@task(help={"backend": LAB_BACKEND_HELP, "prefix": PREFIX_HELP})
def doctor(c, backend=None, prefix=DEFAULT_PREFIX):
    """Check the lab piece by piece (interfaces, offload, SSH, RST rule, responder, Scapy)."""
    from harness.doctor import diagnose, format_checks
    b = _lab(backend, prefix)
    try:
        checks = diagnose(b)
    except LabError as e:
        raise _fail(e)
    print(format_checks(checks))
    bad = [ch.name for ch in checks if not ch.ok]
    if bad:
        raise Exit(f"tcplab: doctor: {len(bad)} problem(s): {', '.join(bad)}", code=1)
    print(f"tcplab: doctor: all {len(checks)} checks passed")


@task(help={"quick": "unit tests only (no labs)", "k": "pytest -k expression",
            "x": "stop at the first failure"})
def test(c, quick=False, k=None, x=False):
    """Run the test suite: unit tests, then end-to-end tests on real labs (the 25 slowest
    tests are listed at the end: where the suite's time goes)."""
    cmd = [sys.executable, "-m", "pytest", "-ra", "--durations=25"]
    cmd += ["tests/unit"] if quick else ["tests"]
    if k:
        cmd += ["-k", k]
    if x:
        cmd += ["-x"]
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        raise Exit(code=rc)


@task(help={"quick": "small counts and 2 rounds, under a minute (CI's smoke test)",
            "backend": "also time up/demo/down on this backend (netns always; qemu adds "
                       "the QEMU VM)",
            "prefix": "name of the bench's own lab (default bench + 4 random hex digits)",
            "rounds": "rounds per figure (default 5; quick 2)",
            "only": "comma-separated items: handshake,http,checksum,tarpit,lab,profile,labs,"
                    "grading (grading: invoke grade of one submission on a warm lab, and a class "
                    "of 12 with --jobs 4 vs --jobs 1; ~8 min, labs of its own; --quick leaves it "
                    "out unless named here)",
            "flood": "instead: the SYN flood of this many SYNs with legitimate clients during "
                     "it (same as invoke fuzz --flood; e.g. 100000)",
            "runtime": "the responder's interpreters, side by side: cpython,pypy (default "
                       "both), or one of them",
            "profile": "the account of the server's CPU per connection (item profile: "
                       "perf/strace, softirqs, the RST rule's counter, cProfile, bench.hotpath "
                       "on each runtime); with --only, added to those items"})
def bench(c, quick=False, backend="netns", prefix=None, rounds=0, only="", flood=0,
          runtime="cpython,pypy", profile=False):
    """Measure the responder and the lab against references in the same run: table, JSON, plot."""
    if flood:
        return _flood(flood, prefix or "benchflood")
    from bench.runner import run_and_print
    try:
        if profile and not only:
            only = "profile"
        run_and_print(quick=quick, backend=backend, prefix=prefix, rounds=rounds, only=only,
                      runtime=runtime, profile=profile)
    except LabError as e:
        raise _fail(e)


def _flood(count: int, prefix: str) -> None:
    """The SYN flood (harness.stress.flood.flood_run) with its figures as JSON; exit 1 if it
    failed."""
    from harness.stress.flood import flood_run
    try:
        res = flood_run(count, prefix)
    except LabError as e:
        raise _fail(e)
    print(json.dumps(res, indent=2))
    if not res["ok"]:
        raise Exit("tcplab: the flood found a problem (see above)", code=1)


@task
def box(c):
    """Build the local Vagrant box (libvirt) from the qemu backend's Debian image; cached."""
    from harness.lab.vagrant import build_box
    try:
        print(build_box())
    except LabError as e:
        raise _fail(e)


@task(help={"inputs": "fuzz inputs (sessions of packets) to run (default 1,000,000)",
            "engine": "atheris (coverage-guided, if installed), hypothesis, or auto",
            "seconds": "stop the fuzzing after this many seconds (atheris; 0: no limit)",
            "flood": "instead: a SYN flood of this many SYNs at a hello responder on a lab of "
                     "its own, with legitimate clients during it (e.g. 100000)",
            "soak": "instead: this many demos in a row on one lab (e.g. 100)",
            "prefix": "lab name for --flood and --soak (default relfuzz)"})
def fuzz(c, inputs=1_000_000, engine="auto", seconds=0, flood=0, soak=0, prefix="relfuzz"):
    """Fuzz the responder's receive path (>= 10^6 inputs), or run the full flood or a soak."""
    from harness.stress.fuzz import fuzz as run_fuzz
    from harness.stress.soak import soak as run_soak
    if flood:
        return _flood(flood, prefix)
    try:
        if soak:
            res = run_soak(soak, prefix)
        else:
            res = run_fuzz(inputs, engine, seconds=seconds)
    except LabError as e:
        raise _fail(e)
    print(json.dumps(res, indent=2))
    if not res["ok"]:
        raise Exit("tcplab: fuzz/flood/soak found a problem (see above)", code=1)


@task(help={"submission": "a .c file, a .py file, a directory with a Makefile or an "
                          "executable 'run' -- or a class: a directory of those",
            "rubric": "rubric name (rubrics/NAME.yml) or path (default lab4)",
            "backend": f"lab backend: {', '.join(BACKENDS)} (default netns); grading makes "
                       "its own labs",
            "min_score": "exit 3 when a score is below this many points",
            "jobs": "a class: grade this many submissions at once, on a pool of this many labs "
                    "(one playbook run; each lab serves one job at a time, cleaned after)",
            "out": "where the grade folders go (default grades/)",
            "prefix": "one submission: the name of the lab grading makes (default g + random)",
            "budget": "seconds of lessons per submission; the lessons left after it are "
                      "errors (default 300)"})
def grade(c, submission, rubric="lab4", backend="netns", min_score=None, jobs=1, out=None,
          prefix=None, budget=300):
    """Grade a responder (anyone's) on the wire against a rubric: report card in grades/.

    SUBMISSION is a .c file (gcc -O2 -Wall), a .py file (the VM's python3), or a directory
    (make if it has a Makefile, then ./responder; or an executable ./run).  The program is
    told nothing; it must answer TCP on 192.168.56.100:80 (docs/grading.md: the contract).
    Each lesson restarts it; on netns it runs in a sandbox (its own uid, only CAP_NET_RAW, a
    read-only filesystem, limits).  A directory holding none of Makefile/run/responder is a
    class: every file and subdirectory in it is graded, --jobs at a time on a pool of --jobs
    labs, into one folder with index.html and grades.csv.  Exit 0 when grading completed (whatever the score), 3 below
    --min-score, 1 when the grader itself failed.  Leftover labs: invoke down --all.
    """
    from harness.grade.grader import GRADES_DIR, terminate_as_interrupt
    from harness.grade.grader import grade as grade_one
    from harness.grade.klass import grade_class, is_class_dir
    from harness.report.card import format_table
    kw = {"rubric": rubric, "backend": backend, "out_dir": Path(out) if out else GRADES_DIR,
          "budget": float(budget)}
    try:
        with terminate_as_interrupt():
            if is_class_dir(Path(submission)):
                grades, root = grade_class(submission, jobs=int(jobs), **kw)
                for g in grades:
                    print(f"{g['submission']:<30} {g['score']:>4}/{g['max_score']:<4} "
                          f"{g.get('error', '')}")
                print(f"class: {os.path.relpath(root / 'index.html')}")
            else:
                g, gdir = grade_one(submission, prefix=prefix, **kw)
                grades = [g]
                print(format_table(g))
                print(f"card: {os.path.relpath(gdir / 'report.html')}")
    except LabError as e:
        raise _fail(e)
    except KeyboardInterrupt:
        raise Exit("tcplab: grading interrupted; the labs it made are removed", code=130)
    if any(g.get("grader_failed") for g in grades):
        raise Exit("tcplab: the grader failed for some submissions (see above)", code=1)
    if min_score is not None and any(g["score"] < float(min_score) for g in grades):
        raise Exit(f"tcplab: score below --min-score {min_score}", code=3)


ns = Collection(up, down, status_, demo, lessons, scenarios, doctor, test, bench, box, fuzz,
                grade)
