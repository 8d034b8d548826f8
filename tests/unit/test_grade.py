"""harness.grade without a lab: rubrics as data and their errors, submissions built for real in
the sandbox (gcc, python3, make), the probe on this machine's /proc, and the report card
(grade.json, report.html, junit.xml, the terminal table, a class's index and CSV)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.grade import probe
from harness.grade.grader import lesson_why
from harness.grade.klass import is_class_dir
from harness.grade.launcher import describe_status
from harness.grade.rubric import load_rubric, why_not
from harness.grade.sandbox import RUN_LIMITS, UID_BASE, bwrap_argv, sandbox_uid
from harness.report import card
from harness.util import LabError

ROOT = Path(__file__).resolve().parents[2]
SUBS = ROOT / "tests" / "submissions"
SCN = ROOT / "rubrics" / "lab4" / "handshake.scn"


# ---------------------------------------------------------------- rubrics

def test_lab4_rubric_covers_the_issue_lessons():
    r = load_rubric("lab4")
    names = [l.name for l in r.lessons]
    assert names == ["handshake", "lines", "data-ack", "close", "two-clients",
                     "bad-checksum-syn", "ack-lost"]
    assert all(l.checks.endswith(".") for l in r.lessons)
    assert [l.name for l in r.lessons if l.bonus] == ["ack-lost"]
    assert why_not(r.lessons[5], "vagrant").startswith("its scenario holds on netns, qemu only")
    assert r.max_score("netns") == sum(l.points for l in r.lessons
                                       if not l.bonus and not why_not(l, "netns"))


def test_two_clients_is_graded_with_clients_2():
    two = load_rubric("lab4").lessons[4]
    assert two.name == "two-clients" and not two.unavailable
    assert two.scenario.clients == 2 and not two.scenario.states
    timed = [e.timing for e in two.scenario.expects if e.timing]
    assert [(t.ref_text, t.lo, t.hi) for t in timed] == [("@syn", 0, 0.5), ("@est", 0, 0.5)]


def test_a_lesson_this_tcplab_cannot_run_is_reported_not_refused(tmp_path):
    scn = tmp_path / "future.scn"
    scn.write_text(SCN.read_text().replace("expect:\n", "together: 2\nexpect:\n", 1))
    rub = tmp_path / "r.yml"
    rub.write_text("name: r\nlessons:\n  - name: future\n    points: 5\n"
                   "    checks: A lesson of a newer format.\n    scenario: future.scn\n")
    (lesson,) = load_rubric(rub).lessons
    assert lesson.scenario is None
    assert lesson.unavailable == ("needs the scenario header 'together:', which this tcplab's "
                                  "scenario format does not have yet")
    assert why_not(lesson, "netns") == lesson.unavailable
    assert load_rubric(rub).max_score("netns") == 0


def _rubric(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yml"
    p.write_text(text.replace("SCN", str(SCN)))
    return p


@pytest.mark.parametrize("text,message", [
    ("lessons: []\n", "a non-empty list 'lessons'"),
    ("name: x\nfoo: 1\nlessons:\n  - {name: a, points: 1, checks: c, scenario: SCN}\n",
     "unknown key(s) foo"),
    ("lessons:\n  - {name: a, points: 1, checks: c}\n", "lesson a: missing field 'scenario'"),
    ("lessons:\n  - {name: a, points: -1, checks: c, scenario: SCN}\n",
     "field 'points': a whole number >= 0, got -1"),
    ("lessons:\n  - {name: A b, points: 1, checks: c, scenario: SCN}\n", "field 'name'"),
    ("lessons:\n  - {name: a, points: 1, checks: c, scenario: nope.scn}\n",
     "field 'scenario': no file"),
    ("lessons:\n  - {name: a, points: 1, checks: c, scenario: SCN, weight: 2}\n",
     "unknown field(s) weight"),
    ("lessons:\n  - {name: a, points: 1, checks: c, scenario: SCN}\n"
     "  - {name: a, points: 2, checks: d, scenario: SCN}\n", "given twice: a"),
    ("lessons: [\n", "not valid YAML"),
])
def test_bad_rubrics_are_one_line_naming_file_lesson_and_field(tmp_path, text, message):
    with pytest.raises(LabError) as e:
        load_rubric(_rubric(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(tmp_path / "r.yml") in str(e.value)


def test_unknown_rubric_names_the_known_ones():
    with pytest.raises(LabError, match=r"no rubric 'nope' .*known rubrics: lab4"):
        load_rubric("nope")


def test_a_bad_scenario_in_a_rubric_names_both(tmp_path):
    bad = tmp_path / "bad.scn"
    bad.write_text("responder: --app hello\nexpect:\nc>s [Q] seq 0\n")
    with pytest.raises(LabError, match=r"r.yml: lesson a: bad scenario: .*bad.scn:3: field "
                                       r"'flags'"):
        load_rubric(_rubric(tmp_path, f"lessons:\n  - {{name: a, points: 1, checks: c, "
                                      f"scenario: {bad}}}\n"))


# ---------------------------------------------------------------- small pieces

def test_lesson_why_keeps_the_first_packet_s_differences_together():
    fails = ["d.scn:23: packet 14 (server→client): expected flags [.], got [P.]",
             "d.scn:23: packet 14 (server→client): expected ack 4, got 1",
             "d.scn:25: packet 16 (server→client): expected seq 5, got 6",
             "d.scn:23: packet 14 (server→client): expected flags [.], got [P.] (+2 more)"]
    assert lesson_why(fails) == ("d.scn:23: packet 14 (server→client): expected flags [.], "
                                 "got [P.]; expected ack 4, got 1")
    assert lesson_why(["d.scn:9: no server→client packet [F.] seq 98"]) == \
        "d.scn:9: no server→client packet [F.] seq 98"
    assert lesson_why([]) == ""


def test_exit_statuses_in_words():
    assert describe_status(139) == "was killed by SIGSEGV"
    assert describe_status(137) == "was killed by SIGKILL"
    assert describe_status(1) == "exited with status 1"
    assert describe_status(-1) == "was killed by a signal"


def test_progress_shows_what_runs_not_the_sandbox_s_command_line():
    from harness.grade.launcher import SubmissionLauncher
    from harness.lab import get_backend
    from harness.run.responder import TcplabResponder
    b = get_backend("netns", "tdescribe")
    boxed = SubmissionLauncher(["./responder"], "/w", sandbox_uid=1_900_000_005)
    assert boxed.argv(b)[0] == "bwrap" and len(" ".join(boxed.argv(b))) > 400
    assert boxed.describe(b) == "./responder (sandbox: uid 1900000005, CAP_NET_RAW only, limits)"
    guest = SubmissionLauncher(["/usr/bin/python3", "my file.py"], "/g", sandbox_uid=None)
    assert guest.describe(b) == "/usr/bin/python3 'my file.py' (root in the guest, limits)"
    own = TcplabResponder(["--app", "hello"], python="/usr/bin/pypy3")
    assert own.describe(b) == "pypy3 -m responder --listen 192.168.56.100:80 --app hello"


class _RecordingPool:
    """A pool's lease/release interface over named labs, recording calls (the real pool is
    exercised by tests/e2e/test_grade.py's class run and tests/e2e/test_pool.py)."""

    def __init__(self, clean=True):
        self.calls, self.clean = [], clean

    def lease(self):
        self.calls.append("lease")
        return types.SimpleNamespace(prefix=f"gr0000{len(self.calls)}")

    def release(self, lab):
        self.calls.append(f"release {lab.prefix}")
        return types.SimpleNamespace(ok=self.clean, summary=lambda: "killed 1 process(es)")


def test_a_class_job_s_lab_comes_from_one_place():
    """job_lab: a lab leased from the class run's pool, graded as it is (--leased), given back
    on leaving -- also when the job failed; a lab the pool could not clean is an error."""
    from harness.grade.klass import job_lab
    pool = _RecordingPool()
    with pytest.raises(RuntimeError):
        with job_lab(pool) as args:
            assert args == ["--prefix", "gr00001", "--leased"]
            raise RuntimeError("the job failed")
    assert pool.calls == ["lease", "release gr00001"]
    dirty = _RecordingPool(clean=False)
    with pytest.raises(LabError, match=r"lab 'gr00001' could not be cleaned \(killed 1"):
        with job_lab(dirty):
            pass
    assert dirty.calls == ["lease", "release gr00001"]


def test_class_directory_or_one_submission(tmp_path):
    assert is_class_dir(tmp_path)
    (tmp_path / "run").write_text("#!/bin/sh\n")
    assert not is_class_dir(tmp_path)
    assert not is_class_dir(SUBS / "naive.c") and not is_class_dir(SUBS / "hang")
    assert is_class_dir(SUBS)


def test_sandbox_command_line():
    argv = bwrap_argv("/w", 1_900_000_005, ["./responder"], RUN_LIMITS, raw=True, network=True)
    assert argv[0] == "bwrap" and argv[-1] == "./responder"
    assert ["--ro-bind", "/", "/"] == argv[1:4] and "--unshare-pid" in argv
    assert "--unshare-net" not in argv and "--inh-caps=-all,+net_raw" in argv
    assert "--reuid=1900000005" in argv and "--no-new-privs" in argv
    assert "--nproc=32" in argv and "--core=0" in argv
    build = bwrap_argv("/w", 1_900_000_005, ["make"], RUN_LIMITS, raw=False, network=False)
    assert "--unshare-net" in build and "--ambient-caps=-all" in build
    assert not any("net_raw" in a for a in build)


def test_sandbox_uid_is_per_lab_stable_and_unused():
    a, b = sandbox_uid("gabc"), sandbox_uid("gdef")
    assert a != b and a == sandbox_uid("gabc") and a >= UID_BASE
    assert not [d for d in os.listdir("/proc") if d.isdigit() and _uid(d) == a]


def _uid(pid: str):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_probe_sees_a_process_tree_and_its_raw_socket():
    if os.geteuid() != 0:
        pytest.skip("a raw socket needs root")
    p = probe.load()
    child = subprocess.Popen(["sleep", "30"])
    try:
        tree = p["tree"](os.getpid())
        assert child.pid in [t[0] for t in tree] and tree[0][0] == os.getpid()
        assert os.getpid() not in p["raw_holders"]([os.getpid()])
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        try:
            assert p["raw_holders"]([os.getpid(), child.pid]) == [os.getpid()]
        finally:
            s.close()
    finally:
        child.kill()
        child.wait()


def _agent():
    return subprocess.Popen(probe.agent_command(sys.executable), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def _ask(agent, n, *words):
    agent.stdin.write(" ".join(str(w) for w in (n, *words)) + "\n")
    agent.stdin.flush()
    reply = json.loads(agent.stdout.readline())
    assert reply.pop("n") == n
    return reply


PROGRAM = ("import signal, socket, sys, time\n"
           "if 'stubborn' in sys.argv: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "time.sleep(0.3)\n"
           "if 'raw' in sys.argv: s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 6)\n"
           "if 'quits' in sys.argv: sys.exit(3)\n"
           "time.sleep(60)\n")


def _program(*how):
    return subprocess.Popen([sys.executable, "-c", PROGRAM, *how])


def test_the_agent_sees_readiness_and_stops_programs_for_real():
    """The agent the launcher runs in the VM, run here on real processes: ready when the raw
    socket appears (not before), gone when the program quits first, a timeout otherwise; stop
    with SIGTERM, SIGKILL for one that ignores it, nothing for one that has ended."""
    if os.geteuid() != 0:
        pytest.skip("a raw socket needs root")
    agent = _agent()
    progs = [_program("raw"), _program("raw", "stubborn"), _program("quits"), _program()]
    try:
        ready = _ask(agent, 1, "ready", progs[0].pid, 5)
        assert ready["ready"] and not ready["gone"] and ready["after"] >= 0.2, ready
        assert _ask(agent, 2, "status", progs[0].pid)["raw"] == [progs[0].pid]
        assert _ask(agent, 3, "stop", progs[0].pid, 2, 0) == {"processes": 1, "killed": False,
                                                             "ended": False}
        assert progs[0].wait(5) == -15
        assert _ask(agent, 4, "ready", progs[1].pid, 5)["ready"]
        assert _ask(agent, 5, "stop", progs[1].pid, 0.5, 0) == {"processes": 1, "killed": True,
                                                               "ended": False}
        assert progs[1].wait(5) == -9
        gone = _ask(agent, 6, "ready", progs[2].pid, 5)
        assert gone["gone"] and not gone["ready"]
        assert _ask(agent, 7, "stop", progs[2].pid, 2, 0) == {"processes": 0, "killed": False,
                                                             "ended": True}
        late = _ask(agent, 8, "ready", progs[3].pid, 0.6)
        assert not late["ready"] and not late["gone"] and late["after"] > 0.6
    finally:
        for p in progs:
            p.kill()
            p.wait()
        agent.stdin.close()
        assert agent.wait(5) == 0


# ---------------------------------------------------------------- submissions, built for real

needs_sandbox = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap")
                                   or not shutil.which("gcc"),
                                   reason="builds run in the sandbox: root, bwrap, gcc")


def _prepare(tmp_path, src, **kw):
    from harness.grade.submission import prepare
    kw.setdefault("machine", os.uname().machine)
    kw.setdefault("static", False)
    return prepare(Path(src), tmp_path / "work", uid=sandbox_uid("gunit"), **kw)


@needs_sandbox
def test_c_builds_in_the_sandbox_and_runs_as_responder(tmp_path):
    prep = _prepare(tmp_path, SUBS / "naive.c")
    assert prep.built and prep.command == ["./responder"] and not prep.error
    assert prep.how == "gcc -O2 -Wall -o responder naive.c in the sandbox"
    assert (tmp_path / "work" / "responder").stat().st_uid == sandbox_uid("gunit")
    assert "(exit 0)" in prep.build_log


@needs_sandbox
def test_a_second_submission_on_the_same_lab_starts_from_an_empty_directory(tmp_path):
    first = _prepare(tmp_path, SUBS / "naive.c")
    assert first.built and (tmp_path / "work" / "naive.c").exists()
    second = _prepare(tmp_path, SUBS / "nothing")
    assert not second.built and second.error.startswith("nothing runnable in nothing/")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["README"]


@needs_sandbox
def test_c_static_for_a_guest(tmp_path):
    prep = _prepare(tmp_path, SUBS / "naive.c", static=True)
    assert prep.built and "-static" in prep.how and "copied into the guest" in prep.how
    out = subprocess.run(["file", str(tmp_path / "work" / "responder")], capture_output=True,
                         text=True).stdout if shutil.which("file") else "statically linked"
    assert "statically linked" in out


@needs_sandbox
def test_a_build_failure_is_a_value_with_the_compiler_s_message(tmp_path):
    prep = _prepare(tmp_path, SUBS / "nocompile.c")
    assert not prep.built and prep.error.startswith("the build failed: nocompile.c:")
    assert "error:" in prep.error and "nocompile.c" in prep.build_log


@needs_sandbox
def test_the_build_cannot_write_outside_its_directory(tmp_path):
    src = tmp_path / "sneaky"
    src.mkdir()
    (src / "Makefile").write_text("all:\n\ttouch /etc/tcplab-sneaky || true\n"
                                  "\ttouch $(HOME)/ok\n\tprintf '#!/bin/sh\\n' > run\n"
                                  "\tchmod +x run\n")
    prep = _prepare(tmp_path, src)
    assert prep.built and prep.command == ["./run"], prep.error
    assert not Path("/etc/tcplab-sneaky").exists()
    assert "Read-only file system" in prep.build_log
    assert (tmp_path / "work" / "ok").exists()


@needs_sandbox
def test_python_is_syntax_checked(tmp_path):
    good = _prepare(tmp_path, SUBS / "badsum.py")
    assert good.built and good.command == ["/usr/bin/python3", "badsum.py"]
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    prep = _prepare(tmp_path / "b", bad)
    assert not prep.built and "SyntaxError" in prep.error


@needs_sandbox
@pytest.mark.parametrize("make,files,error", [
    (None, {"README": "hi"}, "nothing runnable in d/: no Makefile, no executable "
                             "'responder' or 'run'"),
    ("all:\n\ttrue\n", {}, "make built no executable 'responder'"),
    ("all:\n\tfalse\n", {}, "make failed"),
    (None, {"run": "echo hi\n"}, "run is neither a program (ELF) nor a script"),
])
def test_directories(tmp_path, make, files, error):
    d = tmp_path / "d"
    d.mkdir()
    if make:
        (d / "Makefile").write_text(make)
    for name, text in files.items():
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    prep = _prepare(tmp_path, d)
    assert not prep.built and error in prep.error


@needs_sandbox
def test_a_binary_for_another_architecture_is_named(tmp_path):
    d = tmp_path / "arm"
    d.mkdir()
    elf = bytearray(64)
    elf[:6] = b"\x7fELF\x02\x01"
    elf[18:20] = (183).to_bytes(2, "little")           # EM_AARCH64
    (d / "responder").write_bytes(bytes(elf))
    (d / "responder").chmod(0o755)
    prep = _prepare(tmp_path, d, machine="x86_64")
    assert not prep.built
    assert prep.error == ("responder is a program for aarch64, but the lab VM is x86_64: "
                          "build it for x86_64 (or hand in the source)")


def test_unknown_kinds_and_missing_files(tmp_path):
    from harness.grade.submission import prepare
    (tmp_path / "notes.txt").write_text("x")
    prep = prepare(tmp_path / "notes.txt", tmp_path / "w", uid=UID_BASE, machine="x86_64",
                   static=False)
    assert not prep.built and "not a submission tcplab can run" in prep.error
    with pytest.raises(LabError, match="no submission at"):
        prepare(tmp_path / "gone.c", tmp_path / "w", uid=UID_BASE, machine="x86_64",
                static=False)


# ---------------------------------------------------------------- the card

def _grade(tmp_path) -> dict:
    evil = '<script>alert("x")</script>'
    return {
        "submission": f"stud{evil}.c", "path": "/x", "kind": "c", "rubric": "lab4",
        "rubric_title": "Lab 4", "backend": "netns", "prefix": "gx", "built": True,
        "build": {"how": "gcc", "error": "", "log": "build.log"}, "isolation": "sandbox",
        "limits": "some", "score": 30, "max_score": 40, "bonus_max": 10, "seconds": 1.0,
        "started": "now", "grade_dir": str(tmp_path),
        "lessons": [
            {"lesson": "handshake", "status": "pass", "points": 20, "max_points": 20,
             "bonus": False, "why": "", "checks": "The SYN+ACK.", "scenario": "h.scn",
             "notes": [], "files": {"ladder": "l.svg", "pcap": "c.pcapng"}, "seconds": 1},
            {"lesson": "close", "status": "fail", "points": 0, "max_points": 20,
             "bonus": False, "why": f"expected flags [F.], got [.] {evil}", "checks": "FIN.",
             "scenario": "c.scn", "notes": ["c.scn: states: n/a (reads tcplab's own log)"],
             "files": {}, "seconds": 1},
            {"lesson": "two", "status": "n/a", "points": 0, "max_points": 15, "bonus": False,
             "why": "cannot", "checks": "Two.", "scenario": "t.scn", "notes": [], "files": {},
             "seconds": 0},
            {"lesson": "lost", "status": "error", "points": 0, "max_points": 10,
             "bonus": True, "why": "killed by SIGSEGV", "checks": "Lost.", "scenario": "a.scn",
             "notes": [], "files": {}, "seconds": 1},
        ]}


def test_card_html_escapes_everything_a_submission_wrote(tmp_path):
    g = _grade(tmp_path)
    (tmp_path / "l.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><defs><marker '
                                    'id="arrow"/></defs><line marker-end="url(#arrow)"/></svg>')
    (tmp_path / "build.log").write_text("warning: <b>bold</b>\n")
    html = card.render_html(tmp_path, g)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'id="arrow0"' in html and "url(#arrow0)" in html          # the ladder, inline
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "states: n/a" in html and 'href="c.pcapng"' in html


def test_junit_has_one_case_per_lesson(tmp_path):
    suite = ET.fromstring(card.junit_xml(_grade(tmp_path)).split("\n", 1)[1])
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    assert suite.get("errors") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["close"].find("failure").get("message").startswith("expected flags [F.]")
    assert cases["handshake"].find("failure") is None


def test_terminal_table(tmp_path):
    text = card.format_table(_grade(tmp_path))
    assert "score 30/40 (bonus 0/10 included)" in text
    lines = text.splitlines()
    assert "  ✓   handshake   20/20" in lines, text
    assert "  ⚠   lost         0/10 + killed by SIGSEGV" in lines, text
    assert "  n/a two          0/15   cannot" in lines, text


def test_write_card_and_a_class_index(tmp_path):
    g = _grade(tmp_path / "one")
    (tmp_path / "one").mkdir()
    card.write_card(tmp_path / "one", g)
    assert json.loads((tmp_path / "one" / "grade.json").read_text())["score"] == 30
    assert (tmp_path / "one" / "junit.xml").exists() and (tmp_path / "one" / "report.html")
    failed = {"submission": "late.c", "score": 0, "max_score": 40, "built": False,
              "lessons": [], "error": "grading took longer than 480 s: stopped"}
    card.write_class(tmp_path, [g, failed], "Lab 4 — class")
    rows = (tmp_path / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("submission,score,max_score,built,passed,failed,errors,n/a,"
                              "report,handshake,close,two,lost")
    assert rows[1].startswith("late.c,0,40,False,0,0,0,0,,")
    index = (tmp_path / "index.html").read_text()
    assert 'href="one/report.html"' in index and "grading took longer" in index
    assert "<script>alert" not in index and "http" not in index.split("<script>")[0]
