"""Packet-level tests of the state machine: handshake, options, data, close, sequence arithmetic."""

import pytest

from responder.tcp import (MASK, Config, Stack, State, isn_rfc6528, seq_add, seq_diff, seq_ge,
                           seq_gt, seq_in_window, seq_le, seq_lt)
from responder.wire import ACK, PSH, RST, SYN, TcpOptions

from tests.unit.tcp_helpers import (LOCAL, LOCAL_ISS, LPORT, PEER_TS0, REMOTE, REMOTE_ISS, RPORT,
                                    T0, Peer, Recorder, conn_established, conn_listen)


# --- sequence arithmetic (RFC 9293 3.4) ---------------------------------------------------

def test_seq_compare_across_wrap():
    assert seq_lt(0xFFFFFFF0, 0x10)
    assert seq_gt(0x10, 0xFFFFFFF0)
    assert seq_le(5, 5) and seq_ge(5, 5)
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20
    assert seq_add(MASK, 2) == 1
    assert seq_in_window(2, 0xFFFFFFFE, 10)
    assert not seq_in_window(0xFFFFFFFD, 0xFFFFFFFE, 10)


# --- handshake and options ---------------------------------------------------------------

def test_synack_echoes_offered_options_honestly():
    p = conn_listen()
    s = p.recv(p.send(p.syn()), flags=SYN | ACK, seq=LOCAL_ISS, ack=REMOTE_ISS + 1)
    o = s.options
    assert o.mss == 1460 and o.wscale == 7 and o.sack_permitted
    assert o.timestamps[1] == PEER_TS0                       # TSecr = the SYN's TSval
    assert s.window == 65535                                 # never scaled in a SYN
    assert p.log == ["192.168.56.100:80 <> 192.168.56.1:62438 LISTEN => SYN-RECEIVED"]


def test_synack_offers_nothing_the_peer_did_not():
    p = conn_listen()
    syn = p.seg(SYN, seq=REMOTE_ISS, ack=0, options=TcpOptions(mss=536), window=8192)
    s = p.recv(p.send(syn), flags=SYN | ACK)
    assert s.options.wscale is None and not s.options.sack_permitted
    assert s.options.timestamps is None
    assert p.conn.snd_mss == 536


def test_mss_reduced_by_timestamp_option():
    p = conn_established()
    assert p.conn.snd_mss == 1460 - 12


def test_window_scaled_after_handshake():
    p = conn_established()
    assert p.conn.snd_wscale == 5 and p.conn.rcv_wscale == 7
    assert p.conn.snd_wnd == 1024 << 5
    p.conn.send(b"x")
    s = p.stack.take_output()[0]
    assert s.window == Config().rcv_buf >> 7


def test_isn_rfc6528_is_keyed_and_clocked():
    a = isn_rfc6528(b"k1", (LOCAL, 80), (REMOTE, 1), 10.0)
    assert a != isn_rfc6528(b"k2", (LOCAL, 80), (REMOTE, 1), 10.0)
    assert a != isn_rfc6528(b"k1", (LOCAL, 80), (REMOTE, 2), 10.0)
    assert isn_rfc6528(b"k1", (LOCAL, 80), (REMOTE, 1), 10.000004) == seq_add(a, 1)


def test_stack_without_fixed_isn_uses_rfc6528():
    st = Stack(Config(), isn_key=b"k")
    st.listen(LOCAL, LPORT, Recorder())
    p = Peer()
    syn = p.syn()
    out = st.on_segment(syn, T0)
    assert out[0].seq == isn_rfc6528(b"k", (LOCAL, LPORT), (REMOTE, RPORT), T0)


def test_handshake_ack_establishes_and_opens_app():
    p = conn_established()
    assert p.app.events == ["open"]
    assert p.log[-1].endswith("SYN-RECEIVED => ESTABLISHED")
    assert p.stack.stats()["established_total"] == 1


def test_data_in_order_delivered_and_acked():
    p = conn_established()
    out = p.send(p.seg(ACK | PSH, payload=b"hello"))
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 6)
    assert p.app.data == b"hello"


def test_out_of_order_data_dropped_with_duplicate_ack():
    p = conn_established()
    out = p.send(p.seg(ACK, seq=REMOTE_ISS + 1 + 100, payload=b"later"), advance=False)
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 1)
    assert p.app.data == b""
    assert p.stack.drops["out_of_order"] == 1


def test_retransmitted_data_trimmed():
    p = conn_established()
    p.send(p.seg(ACK, payload=b"abc"))
    out = p.send(p.seg(ACK, seq=REMOTE_ISS + 1, payload=b"abcdef"))
    p.recv(out, ack=REMOTE_ISS + 7)
    assert p.app.data == b"abcdef"


def test_timestamps_recent_follows_rfc7323():
    p = conn_established()
    p.tsval += 10
    p.send(p.seg(ACK, payload=b"a"))
    assert p.conn.ts_recent == PEER_TS0 + 10
    p.conn.send(b"z")
    s = p.stack.take_output()[0]
    assert s.options.timestamps[1] == PEER_TS0 + 10


def test_paws_rejects_old_timestamp():
    p = conn_established()
    p.tsval += 100
    p.send(p.seg(ACK, payload=b"a"))
    p.tsval -= 50
    out = p.send(p.seg(ACK, payload=b"b"), advance=False)
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 2)
    assert p.app.data == b"a"
    assert p.stack.drops["paws"] == 1


def test_missing_timestamp_dropped():
    p = conn_established()
    out = p.send(p.seg(ACK, payload=b"a", options=TcpOptions()), advance=False)
    p.recv_nothing(out)
    assert p.stack.drops["missing_timestamp"] == 1


def test_no_timestamps_when_not_negotiated():
    p = conn_established(timestamps=False)
    p.conn.send(b"x")
    s = p.stack.take_output()[0]
    assert s.options.timestamps is None
    assert p.conn.snd_mss == 1460


@pytest.mark.parametrize("peer_seq", [0xFFFFFFF0, 0xFFFFFFFF, 0x7FFFFFFF])
def test_data_across_sequence_wrap(peer_seq):
    p = conn_listen()
    p.send(p.syn(seq=peer_seq))
    p.send(p.seg(ACK))
    for i in range(40):
        p.send(p.seg(ACK, payload=bytes([i]) * 10))
    assert p.app.data == b"".join(bytes([i]) * 10 for i in range(40))
    assert p.conn.rcv_nxt == (peer_seq + 1 + 400) & MASK


def test_local_iss_near_wrap_send_and_ack():
    p = conn_listen(fixed_isn=0xFFFFFFFE)
    p.rcv_nxt = 0xFFFFFFFF
    p.send(p.syn())
    p.send(p.seg(ACK))
    p.conn.nodelay = True
    for _ in range(3):
        p.conn.send(b"y" * 10)
    out = p.stack.take_output()
    assert [s.seq for s in out] == [0xFFFFFFFF, 9, 19]
    p.rcv_nxt = 29
    p.send(p.seg(ACK))
    assert p.conn.snd_una == 29 and p.conn.send_buffered == 0


def test_segment_for_unknown_port_gets_rst():
    p = conn_listen()
    out = p.send(p.seg(ACK, dport=81, ack=12345), advance=False)
    p.recv(out, flags=RST, seq=12345)
    out = p.send(p.seg(SYN, dport=81, seq=77, ack=0), advance=False)
    p.recv(out, flags=RST | ACK, seq=0, ack=78)
    p.recv_nothing(p.send(p.seg(RST, dport=81)))


def test_ack_to_listen_gets_rst():
    p = conn_listen()
    p.recv(p.send(p.seg(ACK, ack=999)), flags=RST, seq=999)


def test_abort_sends_rst_and_deletes():
    p = conn_established()
    p.conn.abort()
    out = p.stack.take_output()
    p.recv(out, flags=RST, seq=LOCAL_ISS + 1)
    assert p.state is State.CLOSED and ("closed", "aborted") in p.app.events
    assert p.log[-1].endswith("ESTABLISHED => CLOSED")


def test_send_after_close_is_an_error():
    from responder.tcp import TcpError
    p = conn_established()
    p.conn.close()
    with pytest.raises(TcpError):
        p.conn.send(b"late")


def test_sequence_helpers_agree_with_the_signed_distance():
    """seq_lt & co. are written with a mask (one call each on the per-segment path): they
    must say what seq_diff's signed distance says, the wrap and the antipode included."""
    from responder.tcp import HALF
    import random
    rnd = random.Random(5)
    edges = [0, 1, 2, HALF - 2, HALF - 1, HALF, HALF + 1, MASK - 1, MASK]
    pairs = [(a, b) for a in edges for b in edges]
    pairs += [(b, (b + d) & MASK) for b in edges for d in edges]
    pairs += [(rnd.getrandbits(32), rnd.getrandbits(32)) for _ in range(20000)]
    for a, b in pairs:
        d = seq_diff(a, b)
        assert -HALF <= d < HALF and (b + d) & MASK == a
        assert seq_lt(a, b) == (d < 0) and seq_le(a, b) == (d <= 0), (a, b)
        assert seq_gt(a, b) == (d > 0) and seq_ge(a, b) == (d >= 0), (a, b)
        for size in (0, 1, 5, HALF - 1, HALF):
            assert seq_in_window(a, b, size) == (0 <= d < size), (a, b, size)
