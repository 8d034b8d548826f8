"""responder.classic: the lecture's naive copy-and-swap responder, checked against the notes'
capture byte for byte (IP header included), then its echo and FIN behaviour and its
robustness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from responder import wire
from responder.classic import ClassicResponder
from responder import lecture


def client_segment(base=lecture.ACK, **changes) -> bytes:
    """A client packet made from one of the lecture's (fields changed, checksums rebuilt)."""
    seg = wire.parse(base)
    for name, value in changes.items():
        setattr(seg, name, value)
    return bytes(wire.build_packet(seg))


@pytest.fixture
def classic():
    return ClassicResponder()


@pytest.fixture
def established(classic):
    """Handshake done, the three lines sent: the state the notes' capture ends in."""
    classic.on_packet(lecture.SYN)
    classic.on_packet(lecture.ACK)
    return classic


# --- the golden exchange ----------------------------------------------------------------------

def test_golden_exchange_matches_the_notes_byte_for_byte(classic):
    assert classic.on_packet(lecture.SYN) == [lecture.SYNACK]
    assert classic.on_packet(lecture.ACK) == [lecture.DATA1, lecture.DATA2, lecture.DATA3]
    assert classic.on_packet(lecture.ACK32) == []
    assert classic.on_packet(lecture.ACK98) == []


def test_synack_keeps_the_syn_ip_checksum(classic):
    """Swapping addresses reorders words of a one's-complement sum: the sum is unchanged."""
    (synack,) = classic.on_packet(lecture.SYN)
    assert synack[10:12] == lecture.SYN[10:12] == bytes.fromhex("edd1")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_input_types_and_ethernet_padding(kind):
    classic = ClassicResponder()
    assert classic.on_packet(kind(lecture.SYN + bytes(6))) == [lecture.SYNACK]
    assert classic.on_packet(kind(lecture.ACK + bytes(6))) == [lecture.DATA1, lecture.DATA2,
                                                              lecture.DATA3]


def test_lines_are_sent_once_per_connection(established):
    assert established.on_packet(lecture.ACK) == []              # duplicate handshake ACK
    assert established.on_packet(lecture.SYN) == [lecture.SYNACK]  # a new connection ...
    assert len(established.on_packet(lecture.ACK)) == 3          # ... gets them again


def test_handshake_ack_must_ack_the_isn(classic):
    # A responder restarted mid-connection sees ack 32: not the handshake, nothing to send.
    assert classic.on_packet(lecture.ACK32) == []


def test_isn_port_and_lines_are_parameters():
    classic = ClassicResponder(port=8080, isn=5, lines=(b"a", b"bc"))
    syn = client_segment(lecture.SYN, dport=8080)
    (synack,) = classic.on_packet(syn)
    seg = wire.parse(synack)
    assert (seg.seq, seg.ack, seg.sport) == (5, lecture.CLIENT_ISN + 1, 8080)
    ack = client_segment(dport=8080, ack=6)
    out = [wire.parse(p) for p in classic.on_packet(ack)]
    assert [(s.seq, bytes(s.payload)) for s in out] == [(6, b"a"), (7, b"bc")]
    assert classic.on_packet(lecture.SYN) == []                  # port 80 is not ours now


def test_listen_address():
    assert ClassicResponder(addr=lecture.SERVER).on_packet(lecture.SYN) == [lecture.SYNACK]
    assert ClassicResponder(addr=bytes((10, 0, 0, 1))).on_packet(lecture.SYN) == []


# --- the bugs the notes describe ------------------------------------------------------------

def test_client_data_is_echoed_not_acked(established):
    data = client_segment(flags=wire.PSH | wire.ACK, payload=b"hi there\n", ident=4242)
    (echo,) = established.on_packet(data)
    seg, sent = wire.parse(echo), wire.parse(data)
    assert (seg.src, seg.dst, seg.sport, seg.dport) == (sent.dst, sent.src, sent.dport,
                                                        sent.sport)
    assert (seg.seq, seg.ack) == (sent.ack, sent.seq)            # the ack does not advance
    assert bytes(seg.payload) == b"hi there\n"
    assert (seg.flags, seg.window, seg.options, seg.ident, seg.ttl) == \
        (sent.flags, sent.window, sent.options, 4242, sent.ttl)  # all copied
    # A pure swap changes no checksum: the same words are summed in another order.
    assert echo[10:12] == data[10:12] and echo[36:38] == data[36:38]


def test_retransmitted_data_is_echoed_again(established):
    data = client_segment(flags=wire.PSH | wire.ACK, payload=b"x")
    assert established.on_packet(data) == established.on_packet(data)


@pytest.mark.parametrize("payload", [b"", b"bye\n"])
def test_fin_is_acked_and_no_fin_is_ever_sent(established, payload):
    fin = client_segment(flags=wire.FIN | wire.ACK, payload=payload, ack=lecture.ISN + 98)
    (ack,) = established.on_packet(fin)
    seg = wire.parse(ack)
    assert seg.flags == wire.ACK
    assert seg.seq == lecture.ISN + 98
    assert seg.ack == lecture.CLIENT_ISN + 1 + len(payload) + 1
    assert len(seg.payload) == 0
    assert seg.options == wire.parse(fin).options                # copied, TS and all


def test_fin_then_the_client_s_last_ack_gets_nothing(established):
    established.on_packet(client_segment(flags=wire.FIN | wire.ACK, ack=lecture.ISN + 98))
    assert established.on_packet(lecture.ACK98) == []


# --- what it ignores ------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    dict(flags=wire.RST),
    dict(flags=wire.RST | wire.ACK),
    dict(flags=wire.SYN | wire.ACK),
    dict(flags=0),
    dict(flags=wire.FIN),                                        # FIN without ACK
    dict(dport=81),
    dict(dport=81, flags=wire.SYN),
])
def test_ignored(classic, changes):
    assert classic.on_packet(client_segment(**changes)) == []


def test_malformed_is_dropped_and_counted(classic):
    bad = bytearray(lecture.SYN)
    bad[36] ^= 0xFF
    assert classic.on_packet(bytes(bad)) == []
    assert classic.on_packet(b"\x45") == []
    assert classic.drops == {"bad_checksum": 1, "truncated": 1}


def test_ip_options_are_copied_too(classic):
    syn = bytearray(lecture.SYN)
    syn[0] = 0x46
    syn[2:4] = (68).to_bytes(2, "big")
    syn[20:20] = b"\x01\x01\x01\x00"                             # NOP NOP NOP EOL
    syn[10:12] = b"\0\0"
    syn[10:12] = wire.internet_checksum(syn[:24]).to_bytes(2, "big")
    (synack,) = classic.on_packet(bytes(syn))
    assert synack[:1] == b"\x46" and synack[20:24] == b"\x01\x01\x01\x00"
    assert wire.parse(synack).ack == lecture.CLIENT_ISN + 1


# --- robustness -----------------------------------------------------------------------------

@settings(max_examples=200)
@given(st.binary(max_size=100))
def test_garbage_never_raises(data):
    assert ClassicResponder().on_packet(data) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, wire.SYN, wire.ACK, wire.FIN | wire.ACK,
                                           wire.PSH | wire.ACK, wire.RST, wire.SYN | wire.ACK]),
                          st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.binary(max_size=20)), max_size=6))
def test_every_answer_is_a_valid_swapped_packet_without_fin(events):
    classic = ClassicResponder()
    for flags, seq, ack, payload in events:
        pkt = client_segment(flags=flags, seq=seq, ack=ack, payload=payload)
        for answer in classic.on_packet(pkt):
            seg = wire.parse(answer)                             # checksums verify
            assert not seg.flags & wire.FIN
            assert (seg.src, seg.sport) == (lecture.SERVER, lecture.SERVER_PORT)
            assert (seg.dst, seg.dport) == (lecture.CLIENT, lecture.CLIENT_PORT)
