"""harness.run.lessons without a lab: which lessons run, which are skipped and why, the table,
and that one lesson's lab error does not stop the others (the demo itself is a stand-in with
run_demo's signature; tests/e2e/test_scenarios.py runs `invoke lessons` for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.run import lessons
from harness.run.demo import DemoResult
from harness.util import LabError


class _Backend:
    def __init__(self, name, pre):
        self.name, self.prefix, self._pre = name, "t", pre

    def host_exec_prefix(self):
        return self._pre

    @property
    def host_side_isolated(self):
        return bool(self._pre)


def _fake_run(outcomes):
    calls = []

    def run(backend, name, runs_dir):
        calls.append(name)
        what = outcomes.get(name, "pass")
        if what == "lab":
            raise LabError("cannot reach the lab VM over SSH")
        ok = what == "pass"
        return DemoResult(name, ok, "" if ok else f"{name}.scn:12: expected seq 1:12, got 1:11",
                          Path(runs_dir) / f"x-{name}")
    run.calls = calls
    return run


def test_every_lesson_runs_or_is_skipped_with_its_reason(tmp_path, monkeypatch):
    """On VirtualBox as a normal user: the Scapy lessons are skipped with the reason (their RST
    rule would go into this machine's iptables)."""
    from harness.run import clients
    monkeypatch.setattr(clients.os, "geteuid", lambda: 1000)
    run = _fake_run({"miniweb": "fail", "tarpit": "lab"})
    names = lessons.select()
    vbox = _Backend("vagrant", [])
    results = lessons.run_lessons(vbox, names, runs_dir=tmp_path, run=run)
    by = {r.name: r for r in results}
    assert [r.name for r in results] == names and names[0] == "hello"
    assert by["nagle-linux"].status == "skipped" and "for netns only" in by["nagle-linux"].reason
    for scapy in ("challenge-ack", "nagle-responder", "nagle-responder-nodelay",
                  "close-states-simultaneous"):
        assert by[scapy].status == "skipped" and "Scapy" in by[scapy].reason
    assert by["miniweb"].status == "fail" and by["miniweb"].failed
    assert by["tarpit"].status == "error" and "SSH" in by["tarpit"].reason
    assert by["hello"].status == "pass" and not by["hello"].failed
    assert "nagle-linux" not in run.calls and "challenge-ack" not in run.calls
    assert "rto-backoff" in run.calls                      # after the lab error, it went on
    table = lessons.format_table(results, backend="vagrant")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["lesson", "result", "seconds"]
    assert any(l.startswith("hello ") and " ✓ " in l for l in lines)
    assert any(l.startswith("miniweb ") and " ✗ " in l and "expected seq" in l for l in lines)
    assert any(l.startswith("nagle-linux ") and " skipped " in l for l in lines)
    assert lines[-1].endswith("1 failed, 1 errors, 5 skipped on vagrant")


def test_on_virtualbox_as_root_on_linux_only_the_netns_lesson_is_skipped(tmp_path, monkeypatch):
    from harness.run import clients
    monkeypatch.setattr(clients.os, "geteuid", lambda: 0)
    monkeypatch.setattr(clients.platform, "system", lambda: "Linux")
    monkeypatch.setattr(clients.shutil, "which", lambda name: f"/usr/sbin/{name}")
    results = lessons.run_lessons(_Backend("vagrant", []), lessons.select(),
                                  runs_dir=tmp_path, run=_fake_run({}))
    assert {r.name: r.status for r in results if r.status != "pass"} == \
        {"nagle-linux": "skipped"}


def test_on_netns_nothing_is_skipped(tmp_path):
    results = lessons.run_lessons(_Backend("netns", ["ip"]), lessons.select(),
                                  runs_dir=tmp_path, run=_fake_run({}))
    assert all(r.status == "pass" for r in results)


def test_only_selects_in_the_lectures_order_and_refuses_unknown_names():
    assert lessons.select("miniweb, hello") == ["hello", "miniweb"]
    with pytest.raises(LabError, match="no lesson called 'helo'; the lessons are: hello, "):
        lessons.select("helo")


class _Pool:
    """A stand-in with LabPool's leasing shape: ``size`` labs, leased one per caller."""

    def __init__(self, size):
        import threading
        self.size = size
        self.free = [_Backend("netns", ["ip"]) for _ in range(size)]
        for i, b in enumerate(self.free):
            b.prefix = f"p{i + 1}"
        self.cond = threading.Condition()
        self.leases = 0

    def leased(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            with self.cond:
                while not self.free:
                    self.cond.wait()
                lab = self.free.pop()
                self.leases += 1
            try:
                yield lab
            finally:
                with self.cond:
                    self.free.append(lab)
                    self.cond.notify()
        return cm()


def _timed_run(log):
    """A run_demo stand-in that records how many runs were going on when each started."""
    import threading
    import time
    state = {"now": 0}
    lock = threading.Lock()

    def run(backend, name, runs_dir, **kw):
        with lock:
            state["now"] += 1
            log.append((name, state["now"], kw))
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return DemoResult(name, True, "", Path(runs_dir) / f"x-{backend.prefix}-{name}")
    return run


def test_run_jobs_runs_as_many_at_once_as_the_pool_has_labs_and_alone_ones_alone(
        tmp_path, monkeypatch):
    monkeypatch.setattr(lessons, "cpu_alone", lambda s: s in ("rto-backoff", "delayed-ack"))
    log = []
    names = lessons.select()
    res = lessons.run_jobs(_Pool(3), names, runs_dir=tmp_path, run=_timed_run(log),
                           log=lambda m: None)
    assert list(res) == names and all(r.status == "pass" for r in res.values())
    at_start = {name: n for name, n, _ in log}
    assert max(at_start.values()) == 3                           # three labs, three at once
    assert at_start["rto-backoff"] == at_start["delayed-ack"] == 1
    assert [name for name, _, _ in log][-2:] == ["delayed-ack", "rto-backoff"]  # afterwards
    assert {r.lab for r in res.values()} == {"p1", "p2", "p3"}


def test_run_jobs_takes_jobs_with_keywords_and_keeps_one_jobs_error_to_itself(tmp_path):
    log = []
    run = _timed_run(log)

    def flaky(backend, name, runs_dir, **kw):
        if kw.get("fault") == "wrong-seq":
            raise LabError("the lab broke")
        if kw.get("fault") == "bad-checksum":
            raise RuntimeError("tshark crashed")             # not a LabError: still its own
        return run(backend, name, runs_dir, **kw)
    jobs = [lessons.Job("hello"), lessons.Job("hello[wrong-seq]", "hello", {"fault": "wrong-seq"}),
            lessons.Job("miniweb[http]", "miniweb", {"responder": "--app http"}),
            lessons.Job("miniweb[bad]", "miniweb", {"fault": "bad-checksum"})]
    res = lessons.run_jobs(_Pool(2), jobs, runs_dir=tmp_path, run=flaky, log=lambda m: None)
    assert res["hello"].status == "pass" and res["hello[wrong-seq]"].status == "error"
    assert "the lab broke" in res["hello[wrong-seq]"].reason
    assert res["miniweb[bad]"].status == "error"
    assert res["miniweb[bad]"].reason == "RuntimeError: tshark crashed"
    assert res["miniweb[http]"].status == "pass"
    assert ("miniweb", {"responder": "--app http"}) in [(n, kw) for n, _, kw in log]
    with pytest.raises(LabError, match="same name"):
        lessons.run_jobs(_Pool(1), ["hello", "hello"], runs_dir=tmp_path, run=run)
