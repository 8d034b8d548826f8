"""harness.run.demo without a lab: run folders (unique, atomic, inside runs/), the --fault check
on the host, the responder override checked by the responder's parser, the skip rules, and the
overall deadline -- all before anything touches a lab."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from harness.judge.scenario import load_scenario, parse_scenario
from harness.run import demo
from harness.util import LabError


def test_run_folders_never_collide_even_when_made_at_once(tmp_path, monkeypatch):
    """200 folders for the same lab and scenario from 20 threads, with the clock frozen so
    that every name is the same: 200 distinct folders, the later ones numbered."""
    class Frozen(demo.datetime):
        @classmethod
        def now(cls, tz=None):
            return demo.datetime(2026, 12, 2, 3, 59, 36, 123456, tzinfo=tz)
    monkeypatch.setattr(demo, "datetime", Frozen)
    made: list[Path] = []
    lock = threading.Lock()

    def make():
        for _ in range(10):
            d = demo.new_run_dir(tmp_path / "runs", "q1", "hello")
            with lock:
                made.append(d)
    threads = [threading.Thread(target=make) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == len(set(made)) == 200
    assert all(d.is_dir() and d.parent == tmp_path / "runs" for d in made)
    names = sorted(d.name for d in made)
    assert "20261202-035936.123456-q1-hello" in names
    assert "20261202-035936.123456-q1-hello~200" in names


def test_run_folder_names_have_the_lab_and_cannot_leave_runs(tmp_path):
    d = demo.new_run_dir(tmp_path, "lab2", "../../etc/cron.d/x", "../../../tmp/evil")
    assert d.parent == tmp_path and "/" not in d.name and d.is_dir()
    assert "-lab2-" in d.name and d.name.endswith("-fault-.._.._.._tmp_evil")
    assert len(list(tmp_path.iterdir())) == 1


class _NoLab:
    """A backend that fails the test if anything touches it."""

    name, prefix = "netns", "nolab"

    def __getattr__(self, attr):
        pytest.fail(f"the lab was touched ({attr}) before the arguments were checked")


@pytest.mark.parametrize("kw,needle", [
    ({"fault": "../../etc"}, "unknown fault '../../etc': choose one of bad-checksum"),
    ({"fault": "wrong_seq"}, "unknown fault 'wrong_seq'"),
    ({"responder": "--app hello --http-file /etc/shadow"}, "--http-file would make"),
    ({"responder": "--app gopher"}, "invalid choice: 'gopher'"),
])
def test_bad_fault_or_responder_is_refused_before_the_lab_is_touched(tmp_path, kw, needle):
    with pytest.raises(LabError) as info:
        demo.run_demo(_NoLab(), "hello", runs_dir=tmp_path, **kw)
    assert needle in str(info.value)
    assert not any(tmp_path.iterdir())                      # no run folder either


def test_a_scenario_that_is_not_a_file_is_refused_before_the_lab_is_touched(tmp_path):
    with pytest.raises(LabError, match="bad scenario: /dev/zero: not a regular file"):
        demo.run_demo(_NoLab(), "/dev/zero", runs_dir=tmp_path)


class _Backend:
    def __init__(self, name, prefix_argv):
        self.name, self._pre = name, prefix_argv

    def host_exec_prefix(self):
        return self._pre

    @property
    def host_side_isolated(self):
        return bool(self._pre)


def test_skip_reasons():
    ns = _Backend("netns", ["ip", "netns", "exec", "x-host"])
    vbox = _Backend("vagrant", [])
    assert demo.skip_reason(load_scenario("hello"), ns) is None
    assert demo.skip_reason(load_scenario("hello"), vbox) is None
    assert "for netns only" in demo.skip_reason(load_scenario("nagle-linux"), vbox)
    assert demo.skip_reason(load_scenario("nagle-linux"), ns) is None
    assert demo.skip_reason(load_scenario("challenge-ack"), ns) is None


def test_the_scapy_lessons_on_a_host_side_that_is_this_machine(monkeypatch):
    """VirtualBox's host side is this machine: the Scapy peer runs where the harness is root on
    Linux (its RST rule goes into this machine's iptables), and is skipped with the reason,
    never failed, elsewhere."""
    from harness.run import clients
    vbox = _Backend("vagrant", [])
    scn = load_scenario("challenge-ack")
    monkeypatch.setattr(clients.platform, "system", lambda: "Linux")
    monkeypatch.setattr(clients.os, "geteuid", lambda: 0)
    monkeypatch.setattr(clients.shutil, "which", lambda name: f"/usr/sbin/{name}")
    assert demo.skip_reason(scn, vbox) is None
    monkeypatch.setattr(clients.os, "geteuid", lambda: 1000)
    assert "run as root" in demo.skip_reason(scn, vbox)
    monkeypatch.setattr(clients.os, "geteuid", lambda: 0)
    monkeypatch.setattr(clients.shutil, "which", lambda name: None)
    assert "needs iptables" in demo.skip_reason(scn, vbox)
    monkeypatch.setattr(clients.platform, "system", lambda: "Darwin")
    assert "Darwin, not Linux" in demo.skip_reason(scn, vbox)
    # With a lab host namespace nothing of this machine is asked.
    assert demo.skip_reason(scn, _Backend("netns", ["ip", "netns", "exec", "x-host"])) is None


def test_every_run_has_one_bounded_deadline(tmp_path, monkeypatch):
    """The deadline is the client's limit + linger + the set-up budget, and the client limit
    never exceeds 600 s whatever the caller asks."""
    seen = {}

    def fake_bring_up(backend, verbose=False):
        return {"timings": {}}
    monkeypatch.setattr(demo, "bring_up", fake_bring_up)
    b = _Backend("netns", [])
    b.prefix = "dl"
    scn = tmp_path / "held.scn"
    scn.write_text("responder: --app tarpit\nhold: 4s\nlinger: 2s\nexpect:\nc>s [S] seq 0\n")
    run = demo.prepare(b, str(scn), fault=None, runs_dir=tmp_path / "runs", verbose=False,
                       client_timeout=30, responder=None, launcher=None)
    seen["held"] = (run.client_limit, run.deadline.seconds)
    run = demo.prepare(b, "hello", fault=None, runs_dir=tmp_path / "runs", verbose=False,
                       client_timeout=10_000, responder=None, launcher=None)
    seen["hello"] = (run.client_limit, run.deadline.seconds)
    run = demo.prepare(b, str(scn), fault="wrong-seq", runs_dir=tmp_path / "runs",
                       verbose=False, client_timeout=30, responder="--app hello", launcher=None)
    assert run.launcher.args == ["--app", "hello", "--fault", "wrong-seq"]
    assert seen["held"] == (4.0, 4.0 + 2.0 + demo.SETUP_BUDGET_S)
    assert seen["hello"] == (10.0, 10.0 + demo.SETUP_BUDGET_S)     # hello.scn: timeout 10s
    assert 0 < run.deadline.left() <= run.deadline.seconds
    assert parse_scenario("responder: --app hello\nexpect:\nc>s [S]\n").timeout is None
