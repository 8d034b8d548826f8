"""The responder's fault switches added for the scenario lessons (responder/io.py Faults): each
one breaks exactly the behaviour a lesson checks, and --help lists every fault."""

from __future__ import annotations

import subprocess
import sys

from responder import wire
from responder.io import FAULTS, Faults
from responder.tcp import Config
from tests.conftest import ROOT


def test_config_faults():
    cfg = Config()
    Faults("no-delayed-ack").configure(cfg)
    assert cfg.delayed_ack == 0
    cfg = Config()
    Faults("no-challenge-ack").configure(cfg)
    assert cfg.challenge_ack_limit == 0
    cfg = Config()
    Faults(None).configure(cfg)
    assert cfg == Config()


def _seg(flags, window):
    return wire.Segment(b"\xc0\xa8\x38\x64", b"\xc0\xa8\x38\x01", 80, 4000, 1, 2, flags, window)


def test_tarpit_window_opens_only_zero_window_synacks():
    f = Faults("tarpit-window")
    assert f.before(_seg(wire.SYN | wire.ACK, 0)).window == 1024
    assert f.before(_seg(wire.SYN | wire.ACK, 500)).window == 500
    assert f.before(_seg(wire.ACK, 0)).window == 0
    assert Faults(None).before(_seg(wire.SYN | wire.ACK, 0)).window == 0


class _Conn:
    def __init__(self):
        self.rto, self.timers = 1.0, {}


class _Stack:
    """Just enough of tcp.Stack: an RTO timer that doubles, like RFC 6298 5.5."""

    def __init__(self):
        self.set, self.deleted, self.time_wait = [], [], []

    def _timer_rto(self, conn):
        conn.rto *= 2
        self._set_timer(conn, "rto", conn.rto)

    def _set_timer(self, conn, kind, delay):
        conn.timers[kind] = delay
        self.set.append(delay)

    def _enter_time_wait(self, conn):
        self.time_wait.append(conn)

    def _delete(self, conn, reason):
        self.deleted.append(reason)


def test_no_backoff_keeps_the_rto():
    stack, conn = _Stack(), _Conn()
    Faults("no-backoff").patch(stack)
    for _ in range(3):
        stack._timer_rto(conn)
    assert conn.rto == 1.0 and conn.timers["rto"] == 1.0
    normal, conn = _Stack(), _Conn()
    Faults(None).patch(normal)
    for _ in range(3):
        normal._timer_rto(conn)
    assert conn.rto == 8.0


def test_no_time_wait_deletes_instead():
    stack = _Stack()
    Faults("no-time-wait").patch(stack)
    stack._enter_time_wait(_Conn())
    assert stack.deleted and not stack.time_wait


def test_help_lists_every_fault():
    out = subprocess.run([sys.executable, "-m", "responder", "--help"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    for name in FAULTS:
        assert f"\n  {name} " in out, name
