"""The responder's fault switches added for the scenario lessons (responder/faults.py): each
one breaks exactly the behaviour a lesson checks, and --help lists every fault."""

from __future__ import annotations

import subprocess
import sys

from responder import wire
from responder.contract import FAULTS
from responder.faults import Faults
from responder.tcp import Config, State
from responder.wire import ACK, FIN
from tests.conftest import ROOT
from tests.unit.tcp_helpers import conn_established, conn_fin_wait_2


def test_config_faults():
    cfg = Config()
    Faults("no-delayed-ack").configure(cfg)
    assert cfg.delayed_ack == 0
    cfg = Config()
    Faults("no-challenge-ack").configure(cfg)
    assert cfg.challenge_ack_limit == 0
    cfg = Config()
    Faults("no-backoff").configure(cfg)
    assert cfg.rto_backoff is False and Config().rto_backoff is True
    cfg = Config()
    Faults("no-time-wait").configure(cfg)
    assert cfg.time_wait is False and Config().time_wait is True
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


def test_no_backoff_keeps_the_rto():
    """The stack reads Config.rto_backoff: with the fault, every retransmission comes one
    (initial) RTO after the last; without it, the RTO doubles (RFC 6298 5.5)."""
    def gaps(fault):
        p = conn_established(rto_initial=1.0, max_retries=4)
        Faults(fault).configure(p.stack.config)
        p.conn.send(b"x")
        p.stack.take_output()
        times, t = [], 0.0
        while len(times) < 3 and t < 40:
            t += 0.25
            if p.tick(0.25):
                times.append(t)
        return times
    assert gaps("no-backoff") == [1.0, 2.0, 3.0]
    assert gaps(None) == [1.0, 3.0, 7.0]


def test_no_time_wait_deletes_instead_without_the_last_ack():
    """The stack reads Config.time_wait: with the fault the TCB is gone (CLOSED) where
    TIME-WAIT would begin, and the peer's FIN is not even ACKed."""
    p = conn_fin_wait_2()
    Faults("no-time-wait").configure(p.stack.config)
    out = p.send(p.seg(FIN | ACK))
    p.recv_nothing(out)
    assert p.state is State.CLOSED and ("closed", "no TIME-WAIT (fault)") in p.app.events
    p = conn_fin_wait_2()
    p.recv(p.send(p.seg(FIN | ACK)), flags=ACK)
    assert p.state is State.TIME_WAIT


def test_only_wire_faults_touch_the_bytes():
    assert {n for n in FAULTS if Faults(n).on_the_wire} == {"bad-checksum", "wrong-seq",
                                                             "tarpit-window"}
    assert not Faults(None).on_the_wire


def test_help_lists_every_fault():
    out = subprocess.run([sys.executable, "-m", "responder", "--help"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    for name in FAULTS:
        assert f"\n  {name} " in out, name
