"""harness.match: the lecture's capture against classic.scn, mutations of it that must fail at
the right line, packet and field, and synthetic hello exchanges (built with Scapy) whose
client-side variants must all pass."""

from __future__ import annotations

import pytest

from harness.dissect import read_pcap
from harness.match import match
from harness.scenario import load_scenario, parse_scenario
from tests.unit import lecture
from tests.unit.test_dissect import T0, fix_checksums, lecture_frames, write_pcap

C, S = "192.168.56.1", "192.168.56.100"
CPORT, SPORT = 40000, 80
C_ISN, S_ISN = 1_000_000, 3_000_000_000
HELLO_LINES = lecture.LINES


@pytest.fixture(scope="module")
def classic():
    return load_scenario("classic")


@pytest.fixture(scope="module")
def hello():
    return load_scenario("hello")


def judge(tmp_path, scenario, frames, name="x.pcap"):
    return match(scenario, read_pcap(write_pcap(tmp_path / name, frames)), C, S, SPORT)


def judge_lecture(tmp_path, scenario, frames):
    return match(scenario, read_pcap(write_pcap(tmp_path / "l.pcap", frames)),
                 "192.168.56.1", "192.168.56.100", 80)


# ---------------------------------------------------------------- the lecture, classic.scn

def test_lecture_capture_matches_classic(tmp_path, classic):
    v = judge_lecture(tmp_path, classic, lecture_frames())
    assert v.ok, v.failures
    assert [r.packet for r in v.lines] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert v.reason == "classic.scn: all 8 lines matched (8 packets of the connection)"


def test_wrong_length_names_line_packet_and_field(tmp_path, classic):
    frames = lecture_frames()
    frames[4] = (frames[4][0], fix_checksums(lecture.DATA2[:-1]))     # seq 12:31
    v = judge_lecture(tmp_path, classic, frames)
    assert not v.ok
    assert v.failures[0] == ("classic.scn:17: packet 5 (server→client): "
                             "expected seq 12:32, got 12:31")
    assert 5 in v.bad_packets


def test_wrong_seq(tmp_path, classic):
    frames = lecture_frames()
    data1 = bytearray(lecture.DATA1)
    data1[27] += 1                                                     # raw seq + 1
    frames[3] = (frames[3][0], fix_checksums(bytes(data1)))
    v = judge_lecture(tmp_path, classic, frames)
    assert not v.ok
    assert v.reason.startswith("classic.scn:16: packet 4 (server→client): "
                               "expected seq 1:12, got 2:13")


def test_bad_tcp_checksum(tmp_path, classic):
    frames = lecture_frames()
    data3 = bytearray(lecture.DATA3)
    data3[37] ^= 0x40
    frames[6] = (frames[6][0], bytes(data3))
    v = judge_lecture(tmp_path, classic, frames)
    assert v.reason == ("classic.scn:20: packet 7 (server→client): "
                        "expected a correct TCP checksum, got a bad one")


def test_missing_packet_names_the_line(tmp_path, classic):
    frames = lecture_frames()
    del frames[4]                                                      # no seq 12:32
    v = judge_lecture(tmp_path, classic, frames)
    assert not v.ok
    assert v.failures[0].startswith("classic.scn:17: no server→client packet [.] seq 12:32 "
                                    "(packet 6 matches the next line, classic.scn:20)")


def test_missing_packet_at_the_end(tmp_path, classic):
    v = judge_lecture(tmp_path, classic, lecture_frames()[:6])
    assert v.failures[0] == ("classic.scn:20: no server→client packet [.] seq 32:98 "
                             "(capture ended after packet 6)")
    assert v.failures[1].startswith("classic.scn:21: no client→server packet acking 98")


def test_extra_retransmission_fails(tmp_path, classic):
    frames = lecture_frames()
    frames.insert(5, (frames[4][0] + 0.00001, lecture.DATA1))         # DATA1 again
    v = judge_lecture(tmp_path, classic, frames)
    assert not v.ok
    # 30 µs after the original Wireshark calls it out-of-order rather than a retransmission
    assert v.reason == ("classic.scn:20: packet 6 (server→client): unexpected packet [.] "
                        "seq 1:12, ack 1, length 11 (Wireshark: out_of_order) before the one "
                        "this line expects")


def test_retransmission_after_the_end_fails_even_with_trailing_allow(tmp_path, classic):
    frames = lecture_frames() + [(T0 + 1.5, lecture.DATA3)]
    v = judge_lecture(tmp_path, classic, frames)
    assert not v.ok
    assert "packet 9 (server→client): unexpected packet [.] seq 32:98" in v.reason


def test_wrong_payload(tmp_path, classic):
    frames = lecture_frames()
    data3 = bytearray(lecture.DATA3)
    data3[52 + 5] = ord("W")                                           # "Nice Weather"
    frames[6] = (frames[6][0], fix_checksums(bytes(data3)))
    v = judge_lecture(tmp_path, classic, frames)
    assert v.reason.startswith('classic.scn:20: packet 7 (server→client): expected payload '
                               '"Nice weather')
    assert "(first difference at byte 5)" in v.reason


# ---------------------------------------------------------------- synthetic hello exchanges

def _seg(src_is_client, seq, ack, flags, payload=b"", options=None, window=None, ip_id=1):
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw

    if src_is_client:
        ip = IP(src=C, dst=S, id=ip_id, flags="DF")
        tcp = TCP(sport=CPORT, dport=SPORT)
        base_seq, base_ack = C_ISN, S_ISN
        win = 502 if window is None else window
    else:
        ip = IP(src=S, dst=C, id=0, flags="DF")
        tcp = TCP(sport=SPORT, dport=CPORT)
        base_seq, base_ack = S_ISN, C_ISN
        win = 512 if window is None else window
    tcp.seq = (base_seq + seq) & 0xFFFFFFFF
    tcp.ack = (base_ack + ack) & 0xFFFFFFFF if "A" in flags else 0
    tcp.flags = flags
    tcp.window = win
    tcp.options = options if options is not None else []
    pkt = ip / tcp
    if payload:
        pkt = pkt / Raw(load=payload)
    return bytes(pkt)


def _ts(val, ecr):
    return [("NOP", None), ("NOP", None), ("Timestamp", (val, ecr))]


def hello_frames(close="separate", *, fin_delay=0.0005, server_ecr=None, server_tsvals=None,
                 extra=()):
    """A correct hello exchange; ``close`` picks how the client ACKs and closes:
    ``separate`` (ack 12, 32, 98, 99, then FIN), ``cumulative`` (ack 98, 99, FIN) or
    ``folded`` (only FIN+ACK 99)."""
    t = T0
    out = []

    def add(dt, raw):
        nonlocal t
        t += dt
        out.append((t, raw))

    ts = iter(server_tsvals or range(9000, 9100))
    add(0, _seg(True, 0, 0, "S", options=[("MSS", 1460), ("SAckOK", b""),
                                          ("Timestamp", (100, 0)), ("NOP", None),
                                          ("WScale", 7)], window=64240))
    add(0.0004, _seg(False, 0, 1, "SA", window=65535,
                     options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (next(ts), 100)),
                              ("NOP", None), ("WScale", 7)]))
    add(0.0001, _seg(True, 1, 1, "A", options=_ts(101, 9000)))
    ecr = 101 if server_ecr is None else server_ecr
    seq = 1
    for line in HELLO_LINES:
        add(0.0001, _seg(False, seq, 1, "PA", line, options=_ts(next(ts), ecr)))
        seq += len(line)
    add(fin_delay, _seg(False, 98, 1, "FA", options=_ts(next(ts), ecr)))
    if close == "separate":
        for n, a in enumerate((12, 32, 98, 99)):
            add(0.0001, _seg(True, 1, a, "A", options=_ts(102 + n, 9001 + n), ip_id=2 + n))
    elif close == "cumulative":
        add(0.0001, _seg(True, 1, 98, "A", options=_ts(102, 9003)))
        add(0.0001, _seg(True, 1, 99, "A", options=_ts(103, 9004)))
    add(0.0002, _seg(True, 1, 99, "FA", options=_ts(110, 9004), ip_id=9))
    add(0.0001, _seg(False, 99, 2, "A", options=_ts(next(ts), 110)))
    for dt, raw in extra:
        add(dt, raw)
    return out


@pytest.mark.parametrize("close", ["separate", "cumulative", "folded"])
def test_hello_client_ack_variants_all_pass(tmp_path, hello, close):
    v = judge(tmp_path, hello, hello_frames(close))
    assert v.ok, v.failures
    fin_line = next(r for r in v.lines if r.line.flags_text == "F." and not r.line.from_server)
    ack99 = next(r for r in v.lines if r.line.ack == 99 and r.line.is_pure_ack)
    if close == "folded":
        assert ack99.packet == fin_line.packet        # one FIN+ACK satisfied both lines


def test_hello_client_rst_fails(tmp_path, hello):
    frames = hello_frames(extra=[(0.001, _seg(True, 2, 100, "RA"))])
    v = judge(tmp_path, hello, frames)
    assert not v.ok
    assert "a client RST is never allowed unless stated" in v.reason


def test_hello_extra_client_acks_allowed(tmp_path, hello):
    frames = hello_frames("cumulative")
    frames.insert(6, (frames[5][0] + 0.00001, _seg(True, 1, 12, "A", options=_ts(101, 9001))))
    frames.insert(7, (frames[6][0] + 0.00001, _seg(True, 1, 12, "A", options=_ts(101, 9001))))
    assert judge(tmp_path, hello, frames).ok


def test_hello_tsecr_that_the_client_never_sent_fails(tmp_path, hello):
    v = judge(tmp_path, hello, hello_frames(server_ecr=4242))
    assert not v.ok
    assert v.reason.startswith("hello.scn:18: packet 4 (server→client): expected options "
                               "[nop,nop,TS val * ecr echo], got [nop,nop,TS val 9001 ecr "
                               "4242] (option 3: ecr 4242 is no TSval the client sent before)")


def test_hello_tsval_going_backwards_fails(tmp_path, hello):
    v = judge(tmp_path, hello, hello_frames(server_tsvals=[9000, 9005, 9004, 9006, 9007, 9008]))
    assert not v.ok
    assert any("packet 5 (server→client): TSval went backwards: 9004 after 9005 in packet 4"
               in f for f in v.failures)


def test_hello_timing_bound(tmp_path, hello):
    v = judge(tmp_path, hello, hello_frames(fin_delay=1.5))
    assert not v.ok
    assert v.reason.startswith("hello.scn:22: packet 7 (server→client): expected after @hello "
                               "within 0-1s, got 1.50")


def test_hello_missing_fin(tmp_path, hello):
    frames = [f for i, f in enumerate(hello_frames("folded")) if i != 6]
    v = judge(tmp_path, hello, frames)
    assert not v.ok
    assert v.failures[0].startswith("hello.scn:22: no server→client packet [F.] seq 98")


def test_unexpected_retransmitted_fin_fails(tmp_path, hello):
    frames = hello_frames("folded")
    frames.append((frames[-1][0] + 0.3, frames[6][1]))
    v = judge(tmp_path, hello, frames)
    assert not v.ok
    assert "unexpected packet [F.] seq 98" in v.reason
    assert "after the last server line" in v.reason


def test_no_packets_at_all(hello):
    v = match(hello, [], C, S, SPORT)
    assert not v.ok
    assert v.reason.startswith("hello.scn:14: no client→server packet [S] seq 0 "
                               "(capture has no packets)")


def test_options_contains_and_window_range(tmp_path):
    sc = parse_scenario("""responder: --app hello
expect:
c>s [S] seq 0, win 60000-65535, options {wscale 7,TS val * ecr 0}
s>c [S.] seq 0, ack 1, win 65535, options [mss 1460,sackOK,TS val * ecr latest,nop,wscale 7]
""", "t.scn")
    frames = hello_frames()[:2]
    v = judge(tmp_path, sc, frames)
    assert v.ok, v.failures
    sc_bad = parse_scenario("""responder: --app hello
expect:
c>s [S] seq 0, win 1-100, options {wscale 8}
s>c [S.] seq 0, ack 1
""", "t.scn")
    v = judge(tmp_path, sc_bad, frames, "y.pcap")
    assert v.failures[0] == "t.scn:3: packet 1 (client→server): expected win 1-100, got 64240"
    assert v.failures[1].startswith("t.scn:3: packet 1 (client→server): expected options "
                                    "{wscale 8}, got [mss 1460,sackOK,TS val 100 ecr 0,nop,"
                                    "wscale 7] (expected wscale 8, got wscale 7)")
    assert len(v.failures) == 2
