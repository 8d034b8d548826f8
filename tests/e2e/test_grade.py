"""invoke grade end to end: the test submissions graded for real (real labs, the sandbox, nc,
the Python and Scapy clients, tshark), each grade asserted lesson by lesson; the class run
with --jobs 3 gives the same grades; two clients at once fails a program that serves one after
the other; the report card in a real browser (headless Chromium); the sandbox holds against a
program that writes outside, fork-bombs or fills memory; bad input is one line; an interrupted
class leaves no lab; the bench's grading item in its quick form.

Cost on the shared 2-core development machine: 12-17 min in all (load average 5-25), about
half of it the six graded one by one, each on a lab of its own.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.grade.submission import tcplab_as_submission
from tests.conftest import ROOT, new_prefix, require_lab_machine, root_ns_state

pytestmark = pytest.mark.e2e

SUBS = ROOT / "tests" / "submissions"
ONE_LESSON = SUBS / "one-lesson.yml"
LESSONS = ("handshake", "lines", "data-ack", "close", "two-clients", "bad-checksum-syn",
           "ack-lost")


def statuses(grade: dict) -> dict:
    return {l["lesson"]: l["status"] for l in grade["lessons"]}


def expect(*codes: str) -> dict:
    names = {"p": "pass", "f": "fail", "e": "error", "n": "n/a"}
    return dict(zip(LESSONS, (names[c] for c in codes)))


def why(grade: dict, lesson: str) -> str:
    return next(l["why"] for l in grade["lessons"] if l["lesson"] == lesson)


def class_of_six(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("naive.c", "badsum.py", "nocompile.c", "crash-at-syn.c"):
        shutil.copy(SUBS / name, dest / name)
    shutil.copytree(SUBS / "hang", dest / "hang")
    tcplab_as_submission(dest / "tcplab")
    return dest


def lab_namespaces() -> set:
    """Grading labs' namespaces (``g`` + 9 hex digits); other helpers' labs come and go."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines()
            if re.match(r"g[0-9a-f]{9}-(host|vm)\b", l)}


def sandbox_processes() -> list:
    from harness.grade.sandbox import UID_BASE, UID_SPAN
    found = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and UID_BASE <= os.stat(f"/proc/{d}").st_uid < UID_BASE + UID_SPAN:
                found.append(int(d))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    """The six test submissions graded one by one, each on a lab of its own."""
    from harness.grade.grader import grade
    require_lab_machine()
    out = tmp_path_factory.mktemp("grades")
    subs = class_of_six(tmp_path_factory.mktemp("subs") / "class")
    return {p.name: grade(p, out_dir=out)[0] for p in sorted(subs.iterdir())}


def test_the_lecture_s_naive_program(singles):
    g = singles["naive.c"]
    # copy-and-swap keeps nothing per connection, so two clients at once are no problem to it
    assert g["built"] and statuses(g) == expect("p", "p", "f", "f", "p", "f", "f")
    assert (g["score"], g["max_score"], g["bonus_max"]) == (55, 100, 10)
    assert "expected ack 4, got 1" in why(g, "data-ack")          # the ACK it never sends
    assert "expected flags [F.], got [.]" in why(g, "close")       # the FIN it never sends
    assert "expected after @bad within 0.4-3s" in why(g, "bad-checksum-syn")
    assert "expected analysis retransmission" in why(g, "ack-lost")


def test_tcplab_s_own_responder_gets_full_marks(singles):
    g = singles["tcplab"]
    assert statuses(g) == expect("p", "p", "p", "p", "p", "p", "p")
    assert g["score"] == g["max_score"] + g["bonus_max"] == 110
    close = next(l for l in g["lessons"] if l["lesson"] == "close")
    assert close["notes"] == ["close.scn: states: n/a (reads tcplab's own responder log, "
                              "which this program does not write)"]


def test_a_wrong_checksum_is_named(singles):
    g = singles["badsum.py"]
    assert statuses(g) == expect("p", "f", "f", "f", "f", "f", "f")
    assert "expected a correct TCP checksum, got a bad one" in why(g, "lines")
    assert "(connection 1): packet" in why(g, "two-clients")
    assert "expected a correct TCP checksum, got a bad one" in why(g, "two-clients")


def test_a_build_failure_is_a_grade_of_0_with_the_compiler_s_message(singles):
    g = singles["nocompile.c"]
    assert not g["built"] and g["score"] == 0
    assert statuses(g) == expect("e", "e", "e", "e", "e", "e", "e")
    assert why(g, "handshake").startswith("not run: the build failed: nocompile.c:")
    assert "error:" in (Path(g["grade_dir"]) / "build.log").read_text()


def test_a_crash_at_the_first_syn_is_an_error_each_lesson(singles):
    g = singles["crash-at-syn.c"]
    assert statuses(g) == expect("e", "e", "e", "e", "e", "e", "e")
    for l in g["lessons"]:
        if l["status"] == "error":
            assert l["why"].startswith("the program was killed by SIGSEGV during the lesson "
                                       "(crash-at-syn: waiting for a SYN)"), l["why"]


def test_a_program_that_hangs_and_ignores_sigterm_is_killed(singles):
    g = singles["hang"]
    assert statuses(g) == expect("e", "e", "e", "e", "e", "e", "e")
    assert all(l["why"].startswith("the program did not exit within 2 s of SIGTERM and was "
                                   "killed") for l in g["lessons"] if l["status"] == "error")
    assert not sandbox_processes()


def test_each_grade_has_its_three_files_and_the_program_s_output(singles):
    import xml.etree.ElementTree as ET
    for name, g in singles.items():
        d = Path(g["grade_dir"])
        for f in ("grade.json", "report.html", "junit.xml", "build.log"):
            assert (d / f).is_file(), (name, f)
        suite = ET.parse(d / "junit.xml").getroot()
        assert int(suite.get("tests")) == len(LESSONS)
        for l in g["lessons"]:
            assert set(l) >= {"lesson", "status", "points", "max_points", "why"}
            if l["status"] in ("pass", "fail"):
                for key in ("pcap", "transcript", "ladder", "program_out", "program_err"):
                    assert (d / l["files"][key]).is_file(), (name, l["lesson"], key)
    err = Path(singles["tcplab"]["grade_dir"]) / "lessons" / "handshake" / "program.err"
    assert "listening on" in err.read_text()


def test_a_class_with_jobs_3_gives_the_same_grades(singles, tmp_path):
    from harness.grade.klass import grade_class
    before = lab_namespaces()
    grades, root = grade_class(class_of_six(tmp_path / "class"), jobs=3,
                               out_dir=tmp_path / "out")
    by_name = {g["submission"]: g for g in grades}
    assert set(by_name) == set(singles)
    for name, g in by_name.items():
        assert statuses(g) == statuses(singles[name]), name
        assert g["score"] == singles[name]["score"], name
    csv = (root / "grades.csv").read_text().splitlines()
    assert len(csv) == 7 and csv[0].startswith("submission,score,max_score")
    index = (root / "index.html").read_text()
    for name in by_name:
        assert f">{name}</a>" in index
    # one pool of 3 labs served the 6 jobs: a lab is leased again once given back clean
    labs = [g["prefix"] for g in grades]
    assert len(set(labs)) <= 3 and len(set(labs)) < len(labs), labs
    assert lab_namespaces() <= before and not sandbox_processes()


def test_leased_grading_needs_a_lab_its_class_run_holds(tmp_path, lab_factory):
    """--leased (what a class run's jobs get) refuses a lab that is not up, and one that no
    run holds: one line, exit 1, no lab made or removed."""
    def leased(prefix):
        return subprocess.run([sys.executable, "-m", "harness.grade", str(SUBS / "naive.c"),
                               "--out", str(tmp_path), "--prefix", prefix, "--leased"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    require_lab_machine()
    before = lab_namespaces()
    prefix = new_prefix("gl")
    r = leased(prefix)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"tcplab: error: --leased: lab '{prefix}' is not up (a class run leases labs from its "
        f"pool; grade one submission without --leased)"], r.stderr
    assert lab_namespaces() <= before
    lab = lab_factory()                         # up, but no class run holds it
    r = leased(lab.prefix)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"tcplab: error: --leased: nothing holds lab '{lab.prefix}' (its class run ended?): a "
        f"leased lab is locked by the run that leased it"], r.stderr
    assert lab.status()["up"]


# ---------------------------------------------------------------- a real browser

def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (packages/apt-test.txt)")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


class _Rows(html.parser.HTMLParser):
    """The lesson table's rows as a person reads them: id -> (class, visible text)."""

    def __init__(self):
        super().__init__()
        self.rows, self.cur = {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and (a.get("id") or "").startswith("lesson-"):
            self.cur = a["id"][7:]
            self.rows[self.cur] = [a.get("class"), ""]

    def handle_endtag(self, tag):
        if tag == "tr":
            self.cur = None

    def handle_data(self, data):
        if self.cur:
            self.rows[self.cur][1] += data


def test_the_card_in_a_real_browser(singles, tmp_path):
    from PIL import Image
    g = singles["naive.c"]
    page = (Path(g["grade_dir"]) / "report.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-500:]
    rows = _Rows()
    rows.feed(dom.stdout)
    assert [r[0] for r in rows.rows.values()] == ["pass", "pass", "fail", "fail",
                                                  "pass", "fail", "fail"]
    text = {k: " ".join(v[1].split()) for k, v in rows.rows.items()}
    assert text["handshake"].startswith("✓ handshake pass 20 / 20")
    assert text["close"].startswith("✗ close fail 0 / 15") and "expected flags [F.]" in \
        text["close"]
    assert "".join(text["lines"].split()).endswith("pcapngtranscriptstdoutstderr")
    assert 'id="score">55' in dom.stdout and "naive.c" in dom.stdout
    assert dom.stdout.count("<svg") == 7                         # the ladders, inline
    shot = tmp_path / "card.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page)
    assert shot.is_file(), res.stderr[-500:]
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 1600)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50        # not blank: text, marks, bars
        assert shot.stat().st_size > 30_000


def test_the_class_index_in_a_real_browser(singles, tmp_path):
    from harness.report.card import write_class
    root = Path(singles["naive.c"]["grade_dir"]).parent
    write_class(root, list(singles.values()), "Lab 4 — test class")
    dom = chromium(tmp_path, "--dump-dom", (root / "index.html").as_uri())
    assert dom.returncode == 0
    for name, g in singles.items():
        assert f'href="{Path(g["grade_dir"]).name}/report.html">{name}</a>' in dom.stdout


# ---------------------------------------------------------------- the sandbox holds

ESCAPES = ("/etc/tcplab-escape-test", "/root/tcplab-escape-test", "/var/tmp/tcplab-escape-test",
           "/dev/shm/tcplab-escape-test", "/run/tcplab/tcplab-escape-test")


@pytest.mark.parametrize("name,why_starts", [
    ("escape-write.py", "the program exited with status 1 during the lesson (escape-write: "
                        "done trying)"),
    ("forkbomb.py", "the program reached its limit of 32 processes (a fork bomb?)"),
    ("memory.py", "the program exited with status 1 during the lesson (MemoryError)"),
])
def test_the_sandbox_holds(tmp_path, name, why_starts):
    from harness.grade.grader import grade
    require_lab_machine()
    before = (root_ns_state(), lab_namespaces(), [Path(p).exists() for p in ESCAPES])
    g, gdir = grade(SUBS / name, rubric=ONE_LESSON, out_dir=tmp_path)
    assert statuses(g) == {"handshake": "error"}
    assert why(g, "handshake").startswith(why_starts), why(g, "handshake")
    assert (root_ns_state(), lab_namespaces(), [Path(p).exists() for p in ESCAPES]) == before
    assert not sandbox_processes()
    if name == "escape-write.py":
        out = (gdir / "lessons" / "handshake" / "program.out").read_text()
        assert out.count("refused: ") == len(ESCAPES) and "wrote" not in out


# ---------------------------------------------------------------- bad input

def invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (("grade", "tests/submissions/gone.c"), "tcplab: error: no submission at "
                                            "tests/submissions/gone.c: give a .c file"),
    (("grade", "tests/submissions/naive.c", "--rubric", "nope"),
     "tcplab: error: no rubric 'nope'"),
])
def test_bad_input_is_one_line_and_exit_1(args, message):
    require_lab_machine()
    before = lab_namespaces()
    res = invoke(*args, timeout=60)
    assert res.returncode == 1 and res.stderr.strip().startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert lab_namespaces() == before


def test_min_score_exit_codes(tmp_path):
    require_lab_machine()
    low = invoke("grade", "tests/submissions/nocompile.c", "--rubric", str(ONE_LESSON),
                 "--out", str(tmp_path), "--min-score", "1")
    assert low.returncode == 3, low.stderr[-800:]
    assert "score below --min-score 1" in low.stderr and "⚠   handshake" in low.stdout
    ok = invoke("grade", "tests/submissions/nocompile.c", "--rubric", str(ONE_LESSON),
                "--out", str(tmp_path), "--min-score", "0")
    assert ok.returncode == 0 and "card: " in ok.stdout


@pytest.mark.parametrize("sub,first,rest", [
    ("nothing", "not run: nothing runnable in nothing/: no Makefile", None),
    ("noraw.py", "the program did not start: it opened no raw socket within 10 s",
     "not run: it opened no raw socket within 10 s"),
])
def test_nothing_to_run_is_a_grade_of_0(tmp_path, sub, first, rest):
    from harness.grade.grader import grade
    require_lab_machine()
    g, _ = grade(SUBS / sub, out_dir=tmp_path)
    assert g["score"] == 0 and why(g, "handshake").startswith(first)
    if rest:
        assert why(g, "lines").startswith(rest)
    assert not sandbox_processes()


def test_two_clients_fails_a_program_that_serves_one_client_after_the_other(tmp_path):
    """The wire check of "at the same time": the second connection waits for the first."""
    import json
    from harness.grade.grader import grade
    from harness.judge.scenario import load_scenario
    require_lab_machine()
    scn = load_scenario(ROOT / "rubrics" / "lab4" / "two-clients.scn")
    synack = next(e.lineno for e in scn.expects if e.flags_text == "S.")
    g, gdir = grade(SUBS / "one-at-a-time.py", rubric=SUBS / "two-clients.yml",
                    out_dir=tmp_path)
    assert statuses(g) == {"two-clients": "fail"}
    w = why(g, "two-clients")
    assert w.startswith(f"two-clients.scn:{synack} (connection 2): "), w
    # its retransmitted SYN answered a second late, or (lost again) not at all
    assert ("expected after @syn within 0-0.5s, got 1." in w
            or "no server→client packet [S.] seq 0" in w), w
    result = json.loads((gdir / next(l for l in g["lessons"])["files"]["result"]).read_text())
    assert [c["ok"] for c in result["connections"]] == [True, False]
    assert not sandbox_processes()


def test_an_interrupted_class_leaves_no_lab(tmp_path):
    require_lab_machine()
    before = lab_namespaces()
    cls = tmp_path / "class"
    cls.mkdir()
    shutil.copytree(SUBS / "hang", cls / "hang")
    shutil.copy(SUBS / "naive.c", cls / "naive.c")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "grade", str(cls), "--jobs", "2",
                             "--out", str(tmp_path / "out")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not sandbox_processes():
        time.sleep(0.2)                       # until a program runs in a sandbox
    assert sandbox_processes(), "no submission started within 90 s"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-800:]
    assert "interrupted" in err
    assert lab_namespaces() <= before and not sandbox_processes()
    assert (next((tmp_path / "out").iterdir()) / "index.html").is_file()


@pytest.mark.qemu
def test_grading_on_qemu_builds_static_and_runs_as_root_in_the_guest(tmp_path):
    """The qemu path: C linked -static on the host, copied into the guest over SFTP, run as
    root there under the limits, seen ready and stopped from the outside (~80 s under TCG)."""
    from harness.grade.grader import grade
    require_lab_machine()
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages/apt-vm.txt)")
    before = lab_namespaces()
    g, gdir = grade(SUBS / "naive.c", rubric=ONE_LESSON, backend="qemu", out_dir=tmp_path)
    assert g["backend"] == "qemu" and statuses(g) == {"handshake": "pass"}
    assert g["build"]["how"] == ("gcc -O2 -Wall -static -o responder naive.c in the sandbox "
                                 "on the host, copied into the guest")
    assert g["isolation"].startswith("root inside the QEMU guest")
    assert lab_namespaces() <= before


def test_the_grading_bench_item_runs_and_makes_its_rows():
    """invoke bench's item 8 in its quick form (the one-lesson rubric, a class of 2): figures
    for the table, the same grades both ways, no lab left; no assertion on any time."""
    from bench import grading
    from bench.rows import comparisons
    require_lab_machine()
    before = lab_namespaces()
    res = grading.item(quick=True)
    (rnd,) = res["warm"]["rounds"]
    assert rnd["score"] == 20 and rnd["grade_s"] > 0 and rnd["demos_s"] > 0
    assert res["class"]["same_scores"] and res["class"]["jobs2_s"] > 0
    rows = [r for r in comparisons({"grading": res}) if r["item"] == "8 grading"]
    assert [r["reference"] for r in rows] == ["the lessons as tcplab demos", "--jobs 1"]
    assert not any(r["target"] for r in rows)
    assert lab_namespaces() <= before and not sandbox_processes()
