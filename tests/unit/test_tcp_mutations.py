"""Tests that kill the mutations of the responder that survived the unit tests (issue 15, "Test
gaps found by mutating the responder").  Each test names the mutation it kills; each was checked
by applying that mutation by hand and watching the test fail."""

from __future__ import annotations

from responder.cli import build_parser
from responder.io import Responder
from responder.tcp import Config, Ev, State, classify, seq_add
from responder.wire import ACK, SYN, TcpOptions

from tests.unit.tcp_helpers import PEER_TS0, Peer, Recorder, conn_established, conn_listen
from tests.unit.test_tcp_states import _flood_then_legit


def test_window_update_after_the_peers_sequence_numbers_wrap():
    """SND.WL1 < SEG.SEQ is a sequence comparison (RFC 9293 3.10.7.4 fifth check).
    Kills: ``seq_lt(SND.WL1, SEG.SEQ)`` written as a plain ``snd_wl1 < seg.seq`` -- after the
    peer's numbers wrap, its window-0 ACK would then leave our send window open."""
    peer_iss = 0xFFFFFFF0
    p = Peer()
    p.send(p.syn(seq=peer_iss))
    p.send(p.seg(ACK))
    assert p.state is State.ESTABLISHED
    p.send(p.seg(ACK, payload=b"x" * 32))         # the peer's sequence numbers wrap past 0
    assert p.snd_nxt < peer_iss and p.conn.snd_wl1 > p.snd_nxt
    p.send(p.seg(ACK, window=0))                  # the peer's window closes
    assert p.conn.snd_wnd == 0
    p.conn.send(b"held")
    p.recv_nothing(p.stack.take_output())         # nothing may go out into a zero window
    assert "persist" in p.conn.timers             # ... but a probe is scheduled
    out = p.send(p.seg(ACK, window=100))          # and it opens again
    p.recv(out, payload=b"held")


def _small_window_peer(space=1000) -> Peer:
    p = conn_established(app=Recorder(rcv_buf=space))
    assert p.conn.rcv_wnd == space
    return p


def test_data_segment_exactly_at_the_right_edge_is_unacceptable():
    """RFC 9293 3.10.7.4: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND.  Kills ``<`` -> ``<=`` in the
    data-segment test of ``Connection.acceptable``."""
    p = _small_window_peer()
    c = p.conn
    edge = seq_add(c.rcv_nxt, c.rcv_wnd)
    inside = p.seg(ACK, seq=seq_add(edge, -1), payload=b"z")
    at_edge = p.seg(ACK, seq=edge, payload=b"z")
    assert classify(c, c.state, inside, p.now) is Ev.DATA
    assert classify(c, c.state, at_edge, p.now) is Ev.OUT_OF_WINDOW
    out = p.send(at_edge, advance=False)
    p.recv(out, flags=ACK, ack=c.rcv_nxt)
    assert p.stack.drops["out_of_window"] == 1 and not p.stack.drops["out_of_order"]


def test_segment_ending_exactly_at_the_right_edge_is_unacceptable():
    """The second half of the same test: RCV.NXT =< SEG.SEQ+SEG.LEN-1 < RCV.NXT+RCV.WND, for a
    segment starting before RCV.NXT.  Kills ``<`` -> ``<=`` in that half."""
    p = _small_window_peer()
    c = p.conn
    before = seq_add(c.rcv_nxt, -1)
    ends_inside = p.seg(ACK, seq=before, payload=b"z" * c.rcv_wnd)
    ends_at_edge = p.seg(ACK, seq=before, payload=b"z" * (c.rcv_wnd + 2))
    assert classify(c, c.state, ends_inside, p.now) is Ev.DATA
    assert classify(c, c.state, ends_at_edge, p.now) is Ev.OUT_OF_WINDOW


def test_zero_length_segment_exactly_at_the_right_edge_is_unacceptable():
    """Zero length, window > 0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND.  Kills ``<`` -> ``<=``
    in the zero-length test."""
    p = _small_window_peer()
    c = p.conn
    edge = seq_add(c.rcv_nxt, c.rcv_wnd)
    assert classify(c, c.state, p.seg(ACK, seq=seq_add(edge, -1)), p.now) is Ev.ACK
    assert classify(c, c.state, p.seg(ACK, seq=edge), p.now) is Ev.OUT_OF_WINDOW
    p.recv(p.send(p.seg(ACK, seq=edge), advance=False), flags=ACK, ack=c.rcv_nxt)
    assert p.stack.drops["out_of_window"] == 1


def test_peer_window_scale_shift_clamped_to_14():
    """RFC 7323 2.3: a shift above 14 is used as 14.  Kills the missing clamp."""
    p = Peer(wscale=15)
    p.send(p.syn())
    p.send(p.seg(ACK, window=3))
    c = p.conn
    assert c.state is State.ESTABLISHED
    assert c.snd_wscale == 14 and c.snd_wnd == 3 << 14


def test_ts_recent_only_from_a_segment_covering_last_ack_sent():
    """RFC 7323 4.3: TS.Recent = SEG.TSval only if SEG.SEQ =< Last.ACK.sent.  An acceptable
    segment beyond a hole (out of order) must not move it.  Kills the missing SEG.SEQ test."""
    p = conn_established()
    c = p.conn
    assert c.last_ack_sent == c.rcv_nxt and c.ts_recent == PEER_TS0
    p.tsval += 50
    ahead = p.seg(ACK, seq=seq_add(c.rcv_nxt, 10), payload=b"later")
    out = p.send(ahead, advance=False)
    dup_ack = p.recv(out, flags=ACK, ack=c.rcv_nxt)          # out of order: duplicate ACK
    assert c.ts_recent == PEER_TS0
    assert dup_ack.options.timestamps[1] == PEER_TS0          # TSecr echoes the old TS.Recent
    p.send(p.seg(ACK, payload=b"now"))                        # in order: it moves
    assert c.ts_recent == PEER_TS0 + 50


def test_no_mss_option_from_the_peer_means_536():
    """RFC 9293 3.7.1: without an MSS option the send MSS is 536 (less 12 with timestamps).
    Kills a default of 1460."""
    for ts, expect in ((True, 536 - 12), (False, 536)):
        p = conn_listen(timestamps=ts)
        opts = TcpOptions(wscale=5, sack_permitted=True,
                          timestamps=(p.tsval, 0) if ts else None)
        p.send(p.seg(SYN, options=opts, window=65535))
        p.send(p.seg(ACK))
        c = p.conn
        assert c.state is State.ESTABLISHED and c.snd_mss == expect
        c.nodelay = True
        c.send(b"m" * 1000)
        sizes = [len(s.payload) for s in p.stack.take_output()]
        assert sizes == [expect, 1000 - expect], (ts, sizes)


def test_syn_cookie_from_the_previous_slot_is_accepted():
    """RFC 4987 3.6 as Linux does it: a cookie stays valid in the next 64 s slot.  Kills
    checking only the current slot."""
    p, synack = _flood_then_legit()
    made = int(p.now // 64)
    p.now = (made + 1) * 64 + 1.0                 # the next slot
    p.rcv_nxt = seq_add(synack.seq, 1)
    p.last_tsval_seen = synack.options.timestamps[0]
    p.send(p.seg(ACK))
    assert p.conn is not None and p.conn.state is State.ESTABLISHED
    assert p.stack.stats()["syn_cookies_accepted"] == 1


def test_delayed_ack_default_is_the_live_responders_200_ms():
    """The test helpers set their own delayed_ack; the live responder uses Config's default,
    RFC 1122 4.2.3.2's common 0.2 s (< 0.5 s).  Kills a changed default."""
    assert Config().delayed_ack == 0.2
    opts = build_parser().parse_args(["--listen", "192.168.56.100:80", "--app", "echo"])
    live = Responder(opts, random=lambda n: b"\x07" * n)
    assert live.stack.config.delayed_ack == 0.2
    p = conn_established(delayed_ack=Config().delayed_ack)
    p.recv_nothing(p.send(p.seg(ACK, payload=b"one")))
    p.recv_nothing(p.tick(0.19))
    p.recv(p.tick(0.01), flags=ACK, ack=p.snd_nxt)
