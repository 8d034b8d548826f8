"""End-to-end: every shipped lesson passes for real on a netns lab, and each lesson's check
fails on a responder that misbehaves in the way the lesson is about (a ``--fault`` switch, or
a responder that lacks the behaviour).

Those runs (every lesson and every misbehaving variant) are made once per module, on a pool of
:data:`LABS` labs (``TCPLAB_TEST_LABS``, default 3), as many at once as it has labs, the
``cpu: alone`` lessons afterwards one at a time (harness.run.lessons.run_jobs, as ``invoke
lessons --labs N`` does); each test then checks its own run.  The other tests use the scenario
plugin's lab (harness.pytest_plugin): one lab for the module, prefix ``scn`` + random hex,
removed at the end.
"""

from __future__ import annotations

import json
import os

import pytest

from harness.pytest_plugin import lab, run_scenario  # noqa: F401  (the plugin's fixtures)
from harness.judge.scenario import list_scenarios, load_scenario

pytestmark = pytest.mark.e2e

LESSONS = list_scenarios()
#: Labs for the module's batch of runs (this machine has 2 cores; more labs, more sharing).
LABS = int(os.environ.get("TCPLAB_TEST_LABS", "3"))

# (scenario, how the responder misbehaves, what the failure must mention)
BROKEN = [
    ("hello", {"fault": "wrong-seq"}, "seq"),
    ("classic", {"responder": "--app hello"}, "rawseq"),                # not the lecture's code
    ("classic-close", {"responder": "--app hello"}, "classic-close.scn:"),
    ("classic-echo-bug", {"responder": "--app hello"}, "classic-echo-bug.scn:"),  # ACKs data
    ("delayed-ack", {"fault": "no-delayed-ack"}, "ack 12"),
    ("nagle-delayed-ack", {"fault": "no-delayed-ack"}, "within 0.15-0.45s"),
    ("nagle-responder", {"responder": "--app echo --nodelay"}, "within 0.06-0.18s"),
    ("nagle-responder-nodelay", {"responder": "--app echo"}, "within 0-0.05s"),  # Nagle on
    ("nagle-linux", {"responder": "--app echo --nodelay"}, "within 0.03-0.25s"),
    ("rto-backoff", {"fault": "no-backoff"}, "1.6x-2.6x"),
    ("tarpit", {"fault": "tarpit-window"}, "expected win 0, got 1024"),
    ("close-states", {"fault": "no-time-wait"}, "TIME-WAIT"),
    ("close-states-passive", {"responder": "--app hello --classic"}, "close-states-passive.scn"),
    ("close-states-simultaneous", {"fault": "no-time-wait"}, "TIME-WAIT"),
    ("challenge-ack", {"fault": "no-challenge-ack"}, "challenge-ack.scn:"),
    ("miniweb", {"fault": "bad-checksum"}, "checksum"),
    # the lecture's naive program answers whatever packet came last: two clients confuse it
    ("two-clients", {"responder": "--app hello --classic"}, "(connection "),
]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every lesson, and every misbehaving variant, run once on a pool of LABS labs:
    {"lesson:NAME" / "broken:NAME": LessonResult (its DemoResult in ``.result``)}."""
    from harness.lab.pool import LabPool
    from harness.run.lessons import Job, run_jobs
    from tests.conftest import require_lab_machine
    require_lab_machine()
    jobs = [Job(f"lesson:{name}", name) for name in LESSONS]
    jobs += [Job(f"broken:{name}", name, dict(how)) for name, how, _ in BROKEN]
    with LabPool(LABS, tag="scn") as pool:
        return run_jobs(pool, jobs, runs_dir=tmp_path_factory.mktemp("runs"))


def _run(batch, key):
    r = batch[key]
    assert r.result is not None, f"{key}: {r.status}: {r.reason}"     # the lab itself failed
    return r.result


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_passes(batch, name):
    res = _run(batch, f"lesson:{name}")
    assert res.ok, res.summary
    for artefact in ("capture.pcapng", "transcript.txt", "ladder.svg", "result.json"):
        assert (res.run_dir / artefact).stat().st_size > 0, artefact
    result = json.loads((res.run_dir / "result.json").read_text())
    assert result["ok"] is True and result["verdict"] == "pass"
    scn = load_scenario(name)
    for m in scn.measures:
        assert res.measurements[m.name] is not None and m.name in res.summary


@pytest.mark.parametrize("name,how,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_lesson_fails_on_a_misbehaving_responder(batch, name, how, needle):
    res = _run(batch, f"broken:{name}")
    assert not res.ok, f"{name} passed on a responder with {how}"
    text = "\n".join(res.verdict.failures) if res.verdict is not None else res.reason
    assert needle in text, text


def test_every_lesson_has_a_failing_responder_test():
    covered = {b[0] for b in BROKEN} | {"nagle-nodelay"}     # nagle-nodelay: the test below
    assert set(LESSONS) <= covered, set(LESSONS) - covered


def test_nagle_nodelay_check_fails_when_the_stall_is_there(batch):
    """nagle-nodelay says "no stall"; the capture of a run *with* the stall (Nagle on, the
    responder's delayed ACK: the nagle-delayed-ack lesson's run) must fail it, naming the
    timing."""
    from harness.judge.dissect import read_pcap
    from harness.judge.match import match
    res = _run(batch, "lesson:nagle-delayed-ack")
    assert res.ok, res.summary
    stall = res.measurements["stall"]
    assert 0.15 <= stall <= 0.5, stall
    verdict = match(load_scenario("nagle-nodelay"),
                    read_pcap(res.run_dir / "capture.pcapng", display_filter="tcp.port == 80"))
    assert not verdict.ok
    assert any("after @req1 within 0-0.1s" in f for f in verdict.failures), verdict.failures


def test_netem_condition_fails_clearly(run_scenario, tmp_path):  # noqa: F811
    """This kernel has no sch_netem: a delay condition stops the run with a clear error."""
    from harness.util import LabError
    scn = tmp_path / "delay.scn"
    scn.write_text("responder: --app hello\nconditions: delay 100ms\nexpect:\nc>s [S] seq 0\n")
    try:
        res = run_scenario(str(scn))
    except LabError as e:
        assert "netem" in str(e)
    else:                                          # a kernel with netem: then it just runs
        assert res.run_dir.exists()


def test_invoke_lessons_prints_one_table_and_writes_each_run_folder():
    """`invoke lessons` for real on a lab of its own: the table, a folder per lesson, exit 0."""
    import subprocess
    import sys
    from tests.conftest import ROOT, new_prefix, require_lab_machine
    require_lab_machine()
    prefix = new_prefix("les")
    try:
        r = subprocess.run([sys.executable, "-m", "invoke", "lessons", "--prefix", prefix,
                            "--only", "miniweb,hello"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        rows = {l.split()[0]: l for l in r.stdout.splitlines()
                if l.split() and l.split()[0] in ("hello", "miniweb")}
        assert list(rows) == ["hello", "miniweb"], r.stdout
        for row in rows.values():
            assert row.split()[1] == "✓"
            folder = ROOT / row.split()[3]
            assert f"-{prefix}-" in folder.name and (folder / "result.json").exists()
        assert "2 passed, 0 failed, 0 errors, 0 skipped on netns" in r.stdout
        assert "lesson 1/2 hello: ✓" in r.stderr
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down", "--prefix", prefix], cwd=ROOT,
                       capture_output=True, timeout=120)


def test_invoke_demo_skips_a_scenario_not_for_this_backend():
    """nagle-linux says `backends: netns`: on qemu, `invoke demo` says so in one line and exits
    0 without making anything."""
    import subprocess
    import sys
    from tests.conftest import ROOT, new_prefix
    prefix = new_prefix("skp")
    r = subprocess.run([sys.executable, "-m", "invoke", "demo", "--backend", "qemu", "--prefix",
                        prefix, "--scenario", "nagle-linux"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("tcplab: skipped: scenario nagle-linux on qemu: for netns only "
                                "(backends: in nagle-linux.scn)")
    from harness.lab import state_root
    assert not (state_root() / prefix).exists()


def test_invoke_lessons_on_4_labs_gives_the_verdicts_of_one_by_one():
    """`invoke lessons --labs 4`: every lesson on a pool of 4 labs made for it (one playbook
    run); the verdicts are those of one by one (every shipped lesson passes: test_lesson_passes
    and `invoke lessons` on one lab); the `cpu: alone` lessons run after the others, one at a
    time; the labs go at the end."""
    import subprocess
    import sys
    from harness.run.lessons import cpu_alone
    from tests.conftest import ROOT, new_prefix, require_lab_machine
    require_lab_machine()
    base = new_prefix("lp")[:8]
    try:
        r = subprocess.run([sys.executable, "-m", "invoke", "lessons", "--labs", "4", "--prefix",
                            base], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        rows = {l.split()[0]: l.split()[1] for l in r.stdout.splitlines()
                if l.split() and l.split()[0] in LESSONS}
        assert rows == {name: "✓" for name in LESSONS}, r.stdout
        assert f"{len(LESSONS)} passed, 0 failed, 0 errors, 0 skipped on netns" in r.stdout
        assert r.stderr.count("provisioning with Ansible: provision/site.yml (4 labs, one run)") \
            == 1
        done = [l for l in r.stderr.splitlines() if f"/{len(LESSONS)}: " in l]
        labs = {l.split("[")[1].split("]")[0] for l in done}
        assert labs == {f"{base}{i}" for i in range(1, 5)}, labs
        alone = [n for n in LESSONS if cpu_alone(n)]
        order = [l.split("tcplab: ")[1].split(" [")[0] for l in done]
        assert order[len(order) - len(alone):] == alone, order       # last, in lesson order
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert base not in out, "the labs the run made are still there"
    finally:
        for i in range(1, 5):
            subprocess.run([sys.executable, "-m", "invoke", "down", "--prefix", f"{base}{i}"],
                           cwd=ROOT, capture_output=True, timeout=120)
