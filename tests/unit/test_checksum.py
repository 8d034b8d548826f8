"""The Internet checksum in parts (responder.wire): partial sums, fold, pseudo-header and the
RFC 1624 incremental update, each checked against a naive RFC 1071 reference or against a full
recomputation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, strategies as st

from responder import wire
from responder import lecture


def naive_sum(data: bytes) -> int:
    """RFC 1071 section 4.1, as a student writes it: 16-bit words, pad odd, fold at the end."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def naive_checksum(data: bytes) -> int:
    return ~naive_sum(data) & 0xFFFF


# --- partial sum and fold -------------------------------------------------------------------

def test_rfc1071_example():
    # RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (carries folded).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert wire.fold(wire.checksum_partial(data)) == 0xDDF2
    assert wire.internet_checksum(data) == 0x220D


def test_empty_and_zero_buffers():
    assert wire.checksum_partial(b"") == 0
    assert wire.checksum_partial(bytes(100)) == 0
    assert wire.internet_checksum(b"") == 0xFFFF


def test_negative_zero_is_kept():
    # A non-zero sum that is a multiple of 0xFFFF is 0xFFFF in one's complement, not 0.
    assert wire.fold(wire.checksum_partial(b"\xff\xff")) == 0xFFFF
    assert wire.fold(wire.checksum_partial(b"\x80\x00\x7f\xff")) == 0xFFFF
    assert wire.internet_checksum(b"\xff\xff") == naive_checksum(b"\xff\xff") == 0


def test_odd_length_is_zero_padded():
    assert wire.fold(wire.checksum_partial(b"\x12\x34\x56")) == 0x1234 + 0x5600


@given(st.binary(max_size=3000))
def test_partial_sum_matches_naive(data):
    assert wire.fold(wire.checksum_partial(data)) == naive_sum(data)
    assert wire.internet_checksum(data) == naive_checksum(data)


@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(0, 2**20))
def test_sum_in_parts(a, b, initial):
    """Parts add up in any order: sum(a) then sum(b) equals sum(a + b) if ``a`` is even."""
    assume(len(a) % 2 == 0)
    whole = wire.fold(wire.checksum_partial(a + b, initial))
    assert wire.fold(wire.checksum_partial(b, wire.checksum_partial(a, initial))) == whole
    assert wire.fold(wire.checksum_partial(a, wire.checksum_partial(b, initial))) == whole


@given(st.binary(max_size=200), st.integers(0, 199))
def test_memoryview_slices_are_read_in_place(data, cut):
    view = memoryview(bytearray(data))
    assert wire.checksum_partial(view[cut:]) == wire.checksum_partial(data[cut:])


@given(st.integers(0, 2**64))
def test_fold_is_16_bits_and_congruent(s):
    f = wire.fold(s)
    assert f <= 0xFFFF
    assert f % 0xFFFF == s % 0xFFFF
    assert (f == 0) == (s == 0)


def test_lecture_ip_headers_verify():
    for pkt in lecture.EXCHANGE:
        assert wire.internet_checksum(pkt[:20]) == 0
        zeroed = pkt[:10] + b"\0\0" + pkt[12:20]
        assert wire.internet_checksum(zeroed) == int.from_bytes(pkt[10:12], "big")


# --- pseudo-header --------------------------------------------------------------------------

@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_sum_matches_the_bytes(src, dst, proto, length):
    pseudo = src + dst + bytes((0, proto)) + length.to_bytes(2, "big")
    assert wire.fold(wire.pseudo_header_sum(src, dst, proto, length)) == naive_sum(pseudo)


def test_lecture_tcp_checksums_with_pseudo_header():
    for pkt in lecture.EXCHANGE:
        src, dst, tcp = pkt[12:16], pkt[16:20], memoryview(pkt)[20:]
        s = wire.pseudo_header_sum(src, dst, wire.PROTO_TCP, len(tcp))
        assert wire.internet_checksum(tcp, s) == 0             # verifies as received
        naive = naive_checksum(src + dst + b"\0\x06" + len(tcp).to_bytes(2, "big")
                               + bytes(tcp[:16]) + b"\0\0" + bytes(tcp[18:]))
        assert naive == int.from_bytes(tcp[16:18], "big")       # and the reference agrees


# --- RFC 1624 incremental update ------------------------------------------------------------

# Data that is never all zero, as in a real header (the version nibble, the protocol): with an
# all-zero result the full sum gives 0xFFFF and eqn. 3 gives 0, which RFC 1624 section 3 notes.
_nonzero_words = st.binary(min_size=2, max_size=80).filter(lambda b: any(b) and len(b) % 2 == 0)


@pytest.mark.parametrize("width, update", [(2, wire.checksum_update16),
                                           (4, wire.checksum_update32)])
@given(data=_nonzero_words, draw=st.data())
def test_update_matches_full_recomputation(width, update, data, draw):
    assume(len(data) >= width)
    i = draw.draw(st.integers(0, (len(data) - width) // 2)) * 2
    new = draw.draw(st.integers(0, 2 ** (8 * width) - 1))
    changed = data[:i] + new.to_bytes(width, "big") + data[i + width:]
    assume(any(changed))
    old = int.from_bytes(data[i:i + width], "big")
    assert update(wire.internet_checksum(data), old, new) == wire.internet_checksum(changed)


def test_update_never_gives_negative_zero():
    # RFC 1624 section 4's example: the other header words sum to 0xCD7A and m = 0x5555, so
    # HC = ~(0xCD7A + 0x5555) = 0xDD2F.  m becomes 0x3285: recomputation gives ~0xFFFF = 0;
    # eqn. 2 (RFC 1141) would give 0xFFFF; eqn. 3 gives 0, like the recomputation.
    hc = wire.internet_checksum(bytes.fromhex("cd7a5555"))
    assert hc == 0xDD2F
    assert wire.checksum_update16(hc, 0x5555, 0x3285) == 0x0000
    assert wire.internet_checksum(bytes.fromhex("cd7a3285")) == 0x0000
