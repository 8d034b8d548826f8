"""Timers with injected time: RTO (RFC 6298), delayed ACK (RFC 1122), Nagle (RFC 896), zero
window probes, TIME-WAIT and FIN-WAIT-2.  No test sleeps: the clock is the test's."""

import pytest

from responder.tcp import State, seq_add
from responder.wire import ACK, FIN, PSH, RST, SYN

from tests.unit.tcp_helpers import (LOCAL_ISS, REMOTE_ISS, T0, conn_established, conn_fin_wait_1,
                                    conn_fin_wait_2, conn_syn_received, conn_syn_sent,
                                    conn_time_wait)


def test_rto_exponential_backoff_then_give_up_with_rst():
    p = conn_established()
    p.conn.send(b"data")
    first = p.stack.take_output()
    p.recv(first, flags=ACK | PSH, seq=LOCAL_ISS + 1)
    times = []
    while p.state is not State.CLOSED:
        deadline = p.stack.next_deadline()
        out = p.tick(deadline - p.now)
        times.append(round(p.now - T0, 6))
        if p.state is not State.CLOSED:
            p.recv(out, flags=ACK | PSH, seq=LOCAL_ISS + 1, payload=b"data")
    # RFC 6298: initial RTO 1 s, doubled each time (5.5), capped at 60 s (2.5); 6 retries
    assert times == [1, 3, 7, 15, 31, 63, 123]
    p.recv(out, flags=RST, seq=LOCAL_ISS + 5)
    assert ("closed", "timeout") in p.app.events
    st = p.stack.stats()
    assert st["retransmissions"] == 6 and st["resets_sent"] == 1


def test_rtt_sample_sets_rto_and_karn_ignores_retransmitted():
    p = conn_established(rto_min=0.2)
    p.conn.send(b"a")
    p.stack.take_output()
    p.now += 0.1
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    p.send(p.seg(ACK))
    c = p.conn
    # the SYN,ACK was timed too (0 s), then 0.1 s: RFC 6298 2.3
    assert c.srtt == pytest.approx(0.875 * 0 + 0.125 * 0.1)
    rto_before = c.rto
    c.send(b"b")
    p.stack.take_output()
    p.tick(c.rto)                                  # retransmission: Karn, no sample
    p.now += 5
    p.rcv_nxt = seq_add(LOCAL_ISS, 3)
    p.send(p.seg(ACK))
    assert c.srtt == pytest.approx(0.0125)
    assert c.rto == pytest.approx(min(rto_before * 2, 60))  # backed-off RTO kept (5.5)


def test_ack_restarts_timer_and_stops_it_when_all_acked():
    p = conn_established()
    p.conn.nodelay = True
    p.conn.send(b"a")
    p.now += 0.5
    p.conn.send(b"b")
    p.stack.take_output()
    assert p.stack.next_deadline() == pytest.approx(T0 + 1.0)
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    p.send(p.seg(ACK))
    assert p.stack.next_deadline() == pytest.approx(p.now + p.conn.rto)   # 6298 5.3
    p.rcv_nxt = seq_add(LOCAL_ISS, 3)
    p.send(p.seg(ACK))
    assert p.stack.next_deadline() is None                                  # 6298 5.2


def test_synack_retransmitted_then_rst():
    p = conn_syn_received()
    sent = []
    while p.state is State.SYN_RECEIVED:
        out = p.tick(p.stack.next_deadline() - p.now)
        sent += out
    assert [s.flags for s in sent[:-1]] == [SYN | ACK] * 6
    assert sent[-1].flags == RST
    assert p.stack.stats()["half_open"] == 0


def test_duplicate_syn_gets_synack_again():
    p = conn_syn_received()
    out = p.send(p.syn(), advance=False)
    p.recv(out, flags=SYN | ACK, seq=LOCAL_ISS, ack=REMOTE_ISS + 1)


def test_delayed_ack_timer_and_every_second_segment():
    p = conn_established(delayed_ack=0.2)
    p.recv_nothing(p.send(p.seg(ACK, payload=b"one")))
    assert p.stack.next_deadline() == pytest.approx(p.now + 0.2)
    p.recv(p.tick(0.2), flags=ACK, ack=REMOTE_ISS + 4)
    p.recv_nothing(p.send(p.seg(ACK, payload=b"two")))
    p.recv(p.send(p.seg(ACK, payload=b"three")), flags=ACK, ack=REMOTE_ISS + 12)  # 1122 4.2.3.2
    assert p.stack.next_deadline() is None


def test_delayed_ack_piggybacks_on_data():
    p = conn_established(delayed_ack=0.2)
    p.send(p.seg(ACK, payload=b"q"))
    p.conn.send(b"reply")
    s = p.recv(p.stack.take_output(), flags=ACK | PSH, ack=REMOTE_ISS + 2)
    assert s.payload == b"reply"
    assert "delack" not in p.conn.timers


def test_nagle_holds_small_segments_until_ack():
    p = conn_established()
    c = p.conn
    c.send(b"a")
    c.send(b"b")
    c.send(b"c")
    out = p.stack.take_output()
    p.recv(out, payload=b"a")
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    out = p.send(p.seg(ACK))
    p.recv(out, flags=ACK | PSH, payload=b"bc", seq=LOCAL_ISS + 2)


def test_nagle_off_sends_each_write():
    p = conn_established(nodelay=True)
    for ch in b"abc":
        p.conn.send(bytes([ch]))
    out = p.stack.take_output()
    assert [bytes(s.payload) for s in out] == [b"a", b"b", b"c"]


def test_full_sized_segments_not_held_by_nagle():
    p = conn_established()
    mss = p.conn.snd_mss
    p.conn.send(b"x" * (2 * mss + 10))
    out = p.stack.take_output()
    assert [len(s.payload) for s in out] == [mss, mss]       # the 10-byte tail waits
    assert [s.flags for s in out] == [ACK, ACK]


def test_zero_window_probe_backs_off_and_stays_open_while_answered():
    p = conn_established()
    p.send(p.seg(ACK, window=0))
    p.conn.send(b"waiting")
    p.recv_nothing(p.stack.take_output())
    probes = []
    for _ in range(10):
        out = p.tick(p.stack.next_deadline() - p.now)
        probe = p.recv(out, flags=ACK, seq=LOCAL_ISS, ack=REMOTE_ISS + 1)   # SND.UNA - 1
        probes.append(round(p.now - T0, 3))
        p.recv_nothing(p.send(p.seg(ACK, window=0)))                         # still zero
        assert probe.payload == b""
    assert probes[:4] == [1, 3, 7, 15]
    assert p.state is State.ESTABLISHED                      # RFC 1122 4.2.2.17
    out = p.send(p.seg(ACK, window=100))                     # the window opens
    p.recv(out, flags=ACK | PSH, payload=b"waiting")


def test_zero_window_unanswered_probes_give_up():
    p = conn_established(max_retries=3)
    p.send(p.seg(ACK, window=0))
    p.conn.send(b"x")
    while p.state is State.ESTABLISHED:
        out = p.tick(p.stack.next_deadline() - p.now)
    assert out[-1].flags == RST


def test_time_wait_lasts_msl2_and_fin_restarts_it():
    p = conn_time_wait(msl2=2.0)
    assert p.stack.next_deadline() == pytest.approx(p.now + 2.0)
    p.now += 1.5
    out = p.send(p.seg(FIN | ACK, seq=REMOTE_ISS + 1), advance=False)   # FIN again
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 2)
    assert p.stack.next_deadline() == pytest.approx(p.now + 2.0)
    p.tick(1.9)
    assert p.state is State.TIME_WAIT
    p.tick(0.2)
    assert p.state is State.CLOSED
    assert p.log[-1].endswith("TIME-WAIT => CLOSED")
    assert ("closed", "closed") in p.app.events


def test_fin_retransmitted_in_fin_wait_1():
    p = conn_fin_wait_1()
    out = p.tick(1.0)
    p.recv(out, flags=FIN | ACK, seq=LOCAL_ISS + 1)


def test_fin_wait_2_times_out():
    p = conn_fin_wait_2(fin_wait_2_timeout=5.0)
    p.tick(5.0)
    assert p.state is State.CLOSED


def test_syn_sent_retransmits_syn_then_gives_up_silently():
    p = conn_syn_sent(max_retries=2)
    out = p.tick(1.0)
    p.recv(out, flags=SYN, seq=LOCAL_ISS)
    p.tick(2.0)
    out = p.tick(4.0)
    p.recv_nothing(out)
    assert p.state is State.CLOSED and ("closed", "timeout") in p.app.events


def test_after_a_timeout_partial_acks_resend_the_next_lost_segment_at_once():
    p = conn_established(nodelay=True)
    for chunk in (b"a" * 10, b"b" * 10, b"c" * 10):
        p.conn.send(chunk)
    assert len(p.stack.take_output()) == 3                 # all three are lost
    out = p.tick(1.0)
    p.recv(out, seq=LOCAL_ISS + 1, payload=b"a" * 10 + b"b" * 10 + b"c" * 10)
    # (the retransmission may repacketize: one MSS from SND.UNA)
    p.rcv_nxt = seq_add(LOCAL_ISS, 31)
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.conn.recover is None
    q = conn_established(nodelay=True, mss=1460)
    q.conn.snd_mss = 10                                     # one chunk per segment
    for chunk in (b"a" * 10, b"b" * 10, b"c" * 10):
        q.conn.send(chunk)
    q.stack.take_output()
    q.recv(q.tick(1.0), seq=LOCAL_ISS + 1, payload=b"a" * 10)
    q.rcv_nxt = seq_add(LOCAL_ISS, 11)                      # partial ACK: "b" was lost too
    q.recv(q.send(q.seg(ACK)), seq=LOCAL_ISS + 11, payload=b"b" * 10)
    q.rcv_nxt = seq_add(LOCAL_ISS, 21)
    q.recv(q.send(q.seg(ACK)), seq=LOCAL_ISS + 21, payload=b"c" * 10)
    q.rcv_nxt = seq_add(LOCAL_ISS, 31)
    q.recv_nothing(q.send(q.seg(ACK)))
    assert q.stack.stats()["retransmissions"] == 3 and q.stack.next_deadline() is None
