"""The wire layer under hostile input, structure-aware (test_wire.py has the plain garbage and
option-bytes properties; these build packets whose checksums are *right*, so each defect reaches
the check meant for it instead of being hidden behind bad_checksum).

Guarantee: ``parse`` returns a Segment or raises a WireError subclass whose ``reason`` names the
defect; nothing else escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from harness.stress.fuzz import WIRE_REASONS
from harness.stress.inputs import FLAG_BITS, HypothesisSource, craft, gen_options, lecture_packets
from responder import wire

LECTURE = lecture_packets()
u32 = st.integers(0, 0xFFFFFFFF)


def parse_or_reason(buf) -> "wire.Segment | str":
    try:
        return wire.parse(buf)
    except wire.WireError as e:
        assert type(e) is not wire.WireError and e.reason in WIRE_REASONS, repr(e)
        return e.reason


def test_the_reasons_are_many_and_distinct():
    names = [c.reason for c in wire.WireError.__subclasses__()]
    assert len(names) == len(set(names)) >= 10
    assert wire.WireError.reason not in names


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_every_single_bit_flip_of_a_lecture_packet_is_rejected(name):
    """The Internet checksum catches every one-bit error; the parser must say which check
    caught it, for every bit of every packet of the lecture."""
    pkt = LECTURE[name]
    assert isinstance(parse_or_reason(pkt), wire.Segment)
    for i in range(len(pkt) * 8):
        buf = bytearray(pkt)
        buf[i // 8] ^= 0x80 >> (i % 8)
        got = parse_or_reason(bytes(buf))
        assert isinstance(got, str), f"bit {i} flipped and the packet was accepted: {got!r}"


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_every_truncation_of_a_lecture_packet_is_rejected(name):
    pkt = LECTURE[name]
    for n in range(len(pkt)):
        got = parse_or_reason(pkt[:n])
        assert got in ("truncated", "bad_ihl", "bad_length"), (n, got)


@pytest.mark.parametrize("flags", range(256))
def test_every_flag_combination_parses_and_keeps_its_flags(flags):
    """Flags are the state machine's business (SYN+FIN, SYN+RST, no flags at all...): the wire
    layer passes every combination up unchanged."""
    seg = wire.parse(craft(flags=flags, seq=0xFFFFFFFF, ack=0x80000000, payload=b"x"))
    assert seg.flags == flags and seg.seq == 0xFFFFFFFF and seg.ack == 0x80000000
    assert sum(bool(flags & b) for b in FLAG_BITS) == bin(flags).count("1")


@settings(max_examples=200)
@given(st.integers(0, 15), st.integers(0, 60))
def test_data_offset_outside_the_segment_is_bad_data_offset(doff, payload_len):
    tcp_len = 20 + payload_len
    got = parse_or_reason(craft(doff=doff, payload=bytes(payload_len), flags=wire.ACK))
    if doff < 5 or doff * 4 > tcp_len:
        assert got == "bad_data_offset"
    else:
        assert isinstance(got, (wire.Segment, str)) and got not in (
            "bad_checksum", "bad_data_offset", "truncated")


@settings(max_examples=200)
@given(st.integers(2, 255), st.integers(0, 1), st.integers(0, 9))
def test_zero_and_one_byte_option_lengths_are_overruns(kind, length, nops):
    """An option length of 0 or 1 would make a naive parser loop forever or step backwards."""
    opts = bytes((1,) * nops) + bytes((kind, length))
    assert parse_or_reason(craft(options=opts)) == "option_overrun"


@settings(max_examples=200)
@given(st.lists(st.tuples(u32, u32), min_size=1, max_size=4))
def test_sack_blocks_are_kept_as_sent_even_overlapping_reversed_or_wrapped(blocks):
    """Whether SACK blocks make sense (RFC 2018: left < right, inside the window, disjoint) is
    for the state machine to judge; the wire layer must hand over exactly what was sent."""
    opts = bytes((1, 1, 5, 2 + 8 * len(blocks))) + b"".join(
        l.to_bytes(4, "big") + r.to_bytes(4, "big") for l, r in blocks)
    seg = parse_or_reason(craft(options=opts, flags=wire.ACK))
    assert isinstance(seg, wire.Segment) and seg.options.sack == tuple(blocks)


@settings(max_examples=400)
@given(st.data())
def test_structured_options_with_right_checksums_fail_only_as_options(data):
    """Almost-right option lists (odd lengths, unpadded, repeated, unknown kinds): with every
    other field correct, the only possible rejections are the two option reasons."""
    src = HypothesisSource(data.draw)
    got = parse_or_reason(craft(options=gen_options(src), flags=src.int(0, 255),
                                seq=src.u32(), ack=src.u32(), payload=src.blob(30)))
    assert isinstance(got, wire.Segment) or got in ("option_overrun", "bad_option"), got


@settings(max_examples=100, deadline=None)
@given(ihl=st.integers(0, 15), dataofs=st.integers(0, 15), length=st.integers(0, 200),
       flags=st.integers(0, 255), frag=st.integers(0, 0x3FFF), proto=st.sampled_from([6, 17, 1]),
       options=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=12)), max_size=4),
       payload=st.binary(max_size=64))
def test_scapy_built_odd_packets_raise_only_named_errors(ihl, dataofs, length, flags, frag,
                                                         proto, options, payload):
    """Scapy as an independent packet builder with explicit (wrong) header fields and raw
    option tuples; Scapy fills in the checksums."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    pkt = IP(src="192.168.56.1", dst="192.168.56.100", ihl=ihl, len=length, frag=frag & 0x1FFF,
             flags=frag >> 13, proto=proto) / TCP(sport=40000, dport=80, dataofs=dataofs,
                                                   flags=flags, options=options) / Raw(payload)
    try:
        buf = bytes(pkt)
    except Exception:           # Scapy refuses some combinations itself; nothing to test
        return
    parse_or_reason(buf)
