"""End-to-end: every shipped lesson passes for real on one netns lab, and each lesson's check
fails on a responder that misbehaves in the way the lesson is about (a ``--fault`` switch, or
a responder that lacks the behaviour).

The lab comes from the scenario plugin (harness.pytest_plugin): one lab for the module,
prefix ``scn`` + random hex, removed at the end.
"""

from __future__ import annotations

import json

import pytest

from harness.pytest_plugin import lab, run_scenario  # noqa: F401  (the plugin's fixtures)
from harness.judge.scenario import list_scenarios, load_scenario

pytestmark = pytest.mark.e2e

LESSONS = list_scenarios()


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_passes(run_scenario, name):  # noqa: F811
    res = run_scenario(name)
    assert res.ok, res.summary
    for artefact in ("capture.pcapng", "transcript.txt", "ladder.svg", "result.json"):
        assert (res.run_dir / artefact).stat().st_size > 0, artefact
    result = json.loads((res.run_dir / "result.json").read_text())
    assert result["ok"] is True and result["verdict"] == "pass"
    scn = load_scenario(name)
    for m in scn.measures:
        assert res.measurements[m.name] is not None and m.name in res.summary


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


@pytest.mark.parametrize("name,how,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_lesson_fails_on_a_misbehaving_responder(run_scenario, name, how, needle):  # noqa: F811
    res = run_scenario(name, **how)
    assert not res.ok, f"{name} passed on a responder with {how}"
    text = "\n".join(res.verdict.failures) if res.verdict is not None else res.reason
    assert needle in text, text


def test_every_lesson_has_a_failing_responder_test():
    covered = {b[0] for b in BROKEN} | {"nagle-nodelay"}     # nagle-nodelay: the test below
    assert set(LESSONS) <= covered, set(LESSONS) - covered


def test_nagle_nodelay_check_fails_when_the_stall_is_there(run_scenario):  # noqa: F811
    """nagle-nodelay says "no stall"; the capture of a run *with* the stall (Nagle on, the
    responder's delayed ACK) must fail it, naming the timing."""
    from harness.judge.dissect import read_pcap
    from harness.judge.match import match
    res = run_scenario("nagle-delayed-ack")
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
