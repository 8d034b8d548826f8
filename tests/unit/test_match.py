"""harness.judge.match: the lecture's capture against classic.scn, mutations of it that must fail at
the right line, packet and field, and synthetic hello exchanges (built with Scapy) whose
client-side variants must all pass."""

from __future__ import annotations

import pytest

from harness.judge.dissect import read_many
from harness.judge.match import match
from harness.judge.scenario import load_scenario, parse_scenario
from responder import lecture
from tests.unit.test_dissect import (LECTURE_TIMES, T0, fix_checksums, lecture_frames,
                                     write_pcap)

C, S = "192.168.56.1", "192.168.56.100"
CPORT, SPORT = 40000, 80
C_ISN, S_ISN = 1_000_000, 3_000_000_000
HELLO_LINES = lecture.LINES


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Every case of this file as packets: written as pcaps and read by tshark in parallel
    (tshark's start-up, not the matcher, is what costs time)."""
    d = tmp_path_factory.mktemp("cases")
    names = sorted(CASES)
    paths = [write_pcap(d / f"{n}.pcap", CASES[n]()) for n in names]
    return dict(zip(names, read_many(paths, workers=6)))


@pytest.fixture(scope="module")
def classic():
    return load_scenario("classic")


@pytest.fixture(scope="module")
def hello():
    return load_scenario("hello")


def judge(captures, scenario, name):
    """Match the named case (read once per module, see ``captures``) against ``scenario``."""
    return match(scenario, captures[name], C, S, SPORT)


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



# ---------------------------------------------------------------- the cases, as frames

def _lecture_with(index, raw):
    frames = lecture_frames()
    frames[index] = (frames[index][0], raw)
    return frames


def _flip(raw: bytes, offset: int, mask: int) -> bytes:
    b = bytearray(raw)
    b[offset] ^= mask
    return bytes(b)


def _without(frames, index):
    return [f for i, f in enumerate(frames) if i != index]


def _inserted(frames, index, frame):
    return frames[:index] + [frame] + frames[index:]


def _with_extra_acks():
    frames = hello_frames("cumulative")
    t = frames[5][0]
    extra = _seg(True, 1, 12, "A", options=_ts(101, 9001))
    return frames[:6] + [(t + 0.00001, extra), (t + 0.00002, extra)] + frames[6:]


def _as_port(frames, port, seq_delta, dt):
    """``frames`` as another connection: client port ``port``, client ISN moved by
    ``seq_delta``, every packet ``dt`` later."""
    from scapy.layers.inet import IP, TCP
    out = []
    for t, raw in frames:
        ip = IP(raw)
        tcp = ip[TCP]
        if tcp.sport == CPORT:
            tcp.sport, tcp.seq = port, (tcp.seq + seq_delta) & 0xFFFFFFFF
        else:
            tcp.dport = port
            if tcp.flags.A:
                tcp.ack = (tcp.ack + seq_delta) & 0xFFFFFFFF
        del ip.chksum, tcp.chksum
        out.append((t + dt, bytes(ip)))
    return out


def two_hellos(second=None):
    """Two hello connections at once (ports 40000 and 40001, interleaved); ``second``
    transforms the second connection's frames first."""
    other = _as_port(hello_frames("cumulative"), CPORT + 1, 777_777, 0.00005)
    if second:
        other = second(other)
    return sorted(hello_frames("separate") + other, key=lambda f: f[0])


CASES = {
    "lecture": lecture_frames,
    # seq 12:32 cut to 12:31
    "lecture_short": lambda: _lecture_with(4, fix_checksums(lecture.DATA2[:-1])),
    # raw seq 0xaaaabbbc -> 0xaaaabbbd on "Hello TCP" (relative 2:13)
    "lecture_seq": lambda: _lecture_with(3, fix_checksums(_flip(lecture.DATA1, 27, 0x01))),
    "lecture_cksum": lambda: _lecture_with(6, _flip(lecture.DATA3, 37, 0x40)),
    "lecture_no_data2": lambda: _without(lecture_frames(), 4),
    "lecture_first6": lambda: lecture_frames()[:6],
    "lecture_rexmit": lambda: _inserted(lecture_frames(), 5,
                                        (T0 + LECTURE_TIMES[4] + 0.00001, lecture.DATA1)),
    "lecture_rexmit_end": lambda: lecture_frames() + [(T0 + 1.5, lecture.DATA3)],
    "lecture_payload": lambda: _lecture_with(6, fix_checksums(
        lecture.DATA3[:57] + b"W" + lecture.DATA3[58:])),
    "hello_separate": lambda: hello_frames("separate"),
    "hello_cumulative": lambda: hello_frames("cumulative"),
    "hello_folded": lambda: hello_frames("folded"),
    "hello_rst": lambda: hello_frames(extra=[(0.001, _seg(True, 2, 99, "RA"))]),
    "hello_extra_acks": _with_extra_acks,
    "hello_bad_ecr": lambda: hello_frames(server_ecr=4242),
    "hello_ts_back": lambda: hello_frames(server_tsvals=[9000, 9005, 9004, 9006, 9007, 9008]),
    "hello_slow_fin": lambda: hello_frames(fin_delay=1.5),
    "hello_no_fin": lambda: _without(hello_frames("folded"), 6),
    "hello_fin_twice": lambda: (lambda f: f + [(f[-1][0] + 0.3, f[6][1])])(
        hello_frames("folded")),
    "two_hellos": two_hellos,
    # the second client's data segment "Great to meet you!" one byte short
    "two_hellos_second_short": lambda: two_hellos(lambda f: f[:4] + [(f[4][0], fix_checksums(
        f[4][1][:-1]))] + f[5:]),
    # a program that serves one client: the second SYN gets a RST
    "two_hellos_second_refused": lambda: sorted(hello_frames("separate") + _as_port(
        [(T0, _seg(True, 0, 0, "S", options=[("MSS", 1460)])),
         (T0 + 0.0001, _seg(False, 0, 1, "RA", window=0))], CPORT + 1, 5, 0.00005),
        key=lambda f: f[0]),
}


# ---------------------------------------------------------------- the lecture, classic.scn

def test_lecture_capture_matches_classic(captures, classic):
    v = judge(captures, classic, "lecture")
    assert v.ok, v.failures
    assert [r.packet for r in v.lines] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert v.reason == "classic.scn: all 8 lines matched (8 packets of the connection)"


# Each broken case: the scenario, the case, and how the first failure must read (a prefix).
FAILURES = [
    ("classic", "lecture_short",
     "classic.scn:17: packet 5 (server→client): expected seq 12:32, got 12:31"),
    ("classic", "lecture_seq",
     "classic.scn:16: packet 4 (server→client): expected seq 1:12, got 2:13"),
    ("classic", "lecture_cksum",
     "classic.scn:20: packet 7 (server→client): expected a correct TCP checksum, got a bad one"),
    ("classic", "lecture_no_data2",
     "classic.scn:17: no server→client packet [.] seq 12:32 (packet 6 matches the next line, "
     "classic.scn:20)"),
    ("classic", "lecture_first6",
     "classic.scn:20: no server→client packet [.] seq 32:98 (capture ended after packet 6)"),
    # 10 µs after the original, Wireshark calls it out-of-order rather than a retransmission
    ("classic", "lecture_rexmit",
     "classic.scn:20: packet 6 (server→client): unexpected packet [.] seq 1:12, ack 1, "
     "length 11 (Wireshark: out_of_order) before the one this line expects"),
    # trailing: allow does not excuse a retransmission
    ("classic", "lecture_rexmit_end",
     "classic.scn:20: packet 9 (server→client): unexpected packet [.] seq 32:98, ack 1, "
     "length 66 (Wireshark: retransmission, spurious_retransmission) after the last server"),
    ("classic", "lecture_payload",
     'classic.scn:20: packet 7 (server→client): expected payload "Nice weather'),
    ("hello", "hello_rst",
     "hello.scn:29: packet 14 (client→server): unexpected packet [R.] seq 2, ack 99, length 0 "
     "after the last client line — a client RST is never allowed unless stated"),
    ("hello", "hello_bad_ecr",
     "hello.scn:18: packet 4 (server→client): expected options [nop,nop,TS val * ecr echo], "
     "got [nop,nop,TS val 9001 ecr 4242] (option 3: ecr 4242 is no TSval the client sent "
     "before)"),
    ("hello", "hello_slow_fin",
     "hello.scn:22: packet 7 (server→client): expected after @hello within 0-1s, got 1.50"),
    ("hello", "hello_no_fin", "hello.scn:22: no server→client packet [F.] seq 98"),
    ("hello", "hello_fin_twice",
     "hello.scn:30: packet 10 (server→client): unexpected packet [F.] seq 98, ack 1, length 0 "
     "(Wireshark: retransmission) after the last server line"),
]


@pytest.mark.parametrize("scenario,case,first", FAILURES, ids=[c for _, c, _ in FAILURES])
def test_broken_exchanges_fail_naming_line_packet_and_field(captures, scenario, case, first):
    v = judge(captures, load_scenario(scenario), case)
    assert not v.ok
    assert v.failures[0].startswith(first), v.failures
    assert v.reason.startswith(v.failures[0])


def test_a_mismatched_packet_is_marked(captures, classic):
    v = judge(captures, classic, "lecture_short")
    assert 5 in v.bad_packets and v.notes[5][0].startswith("✗ classic.scn:17: expected seq 12:32")
    assert [r.line.lineno for r in v.lines if not r.ok][0] == 17


def test_missing_lines_after_the_end_all_reported(captures, classic):
    v = judge(captures, classic, "lecture_first6")
    assert v.failures[1].startswith("classic.scn:21: no client→server packet acking 98 at or "
                                    "after packet 6 (highest client ack seen: 32; capture "
                                    "ended after packet 6)")


def test_hello_client_ack_variants_pass_but_extra_acks_are_noted(captures, hello):
    v = judge(captures, hello, "hello_extra_acks")
    assert v.ok, v.failures
    assert v.notes[8] == ["extra client ACK (allowed)"]


def test_hello_tsval_going_backwards_fails(captures, hello):
    v = judge(captures, hello, "hello_ts_back")
    assert not v.ok
    assert ("hello.scn:19: packet 5 (server→client): TSval went backwards: 9004 after 9005 in "
            "packet 4") in v.failures


def test_no_packets_at_all(hello):
    v = match(hello, [], C, S, SPORT)
    assert not v.ok
    assert v.reason.startswith("hello.scn:14: no client→server packet [S] seq 0 "
                               "(capture has no packets)")


def test_options_contains_window_range_and_latest(captures):
    sc = parse_scenario("""responder: --app hello
expect:
c>s [S] seq 0, win 60000-65535, options {wscale 7,TS val * ecr 0}
s>c [S.] seq 0, ack 1, win 65535, options [mss 1460,sackOK,TS val * ecr latest,nop,wscale 7]
""", "t.scn")
    two = captures["hello_separate"][:2]
    v = match(sc, two, C, S, SPORT)
    assert v.ok, v.failures
    sc_bad = parse_scenario("""responder: --app hello
expect:
c>s [S] seq 0, win 1-100, options {wscale 8}
s>c [S.] seq 0, ack 1
""", "t.scn")
    v = match(sc_bad, two, C, S, SPORT)
    assert v.failures[0] == "t.scn:3: packet 1 (client→server): expected win 1-100, got 64240"
    assert v.failures[1].startswith("t.scn:3: packet 1 (client→server): expected options "
                                    "{wscale 8}, got [mss 1460,sackOK,TS val 100 ecr 0,nop,"
                                    "wscale 7] (expected wscale 8, got wscale 7)")
    assert len(v.failures) == 2


# ---------------------------------------------------------------- robustness, without tshark

def _pkt(n, to_server, flags, seq=0, ack=0, length=0, cport=CPORT, options=()):
    from harness.judge.dissect import Pkt, flags_str

    src, dst, sport, dport = (C, S, cport, SPORT) if to_server else (S, C, SPORT, cport)
    return Pkt(number=n, time=n * 0.001, epoch=T0 + n * 0.001, src=src, dst=dst, sport=sport,
               dport=dport, flags=flags, flags_str=flags_str(flags), seq=seq, ack=ack,
               seq_raw=seq, ack_raw=ack, length=length, window=1000, window_calc=None,
               payload=bytes(length), options=list(options), ip_id=0, ttl=64,
               ip_checksum="good", tcp_checksum="good", ip_checksum_ok=True,
               tcp_checksum_ok=True)


def test_a_stray_packet_of_another_connection_does_not_choose_the_connection(hello):
    from harness.judge.dissect import ACK as A, SYN as SY

    stray = _pkt(1, False, A, seq=5, ack=5, cport=12345)       # late packet of an earlier run
    syn = _pkt(2, True, SY)
    v = match(hello, [stray, syn], C, S, SPORT)
    assert v.client == f"{C}.{CPORT}"
    assert v.notes[1] == ["not this connection (ignored)"]
    assert v.lines[0].packet == 2


def test_matcher_never_crashes_on_any_packets(hello):
    from hypothesis import given, settings, strategies as st

    flag_sets = st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x19, 0x04, 0x14, 0x01, 0])
    ts = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
    opts = st.lists(st.one_of(st.just(("nop", None)), st.builds(lambda v: ("TS", v), ts),
                              st.builds(lambda m: ("mss", m), st.integers(0, 65535))),
                    max_size=4)
    one = st.tuples(st.booleans(), flag_sets, st.integers(0, 200), st.integers(0, 200),
                    st.integers(0, 100), opts)

    @settings(max_examples=50, deadline=None)
    @given(st.lists(one, max_size=20))
    def run(specs):
        pkts = [_pkt(i + 1, *spec[:5], options=spec[5]) for i, spec in enumerate(specs)]
        v = match(hello, pkts, C, S, SPORT)
        assert v.ok is False or not v.failures
        assert v.reason

    run()


# ---------------------------------------------------------------- the real responder, offline
# The shipped scenarios must describe what the responder really sends.  Here the responder's
# own code (the sans-I/O stack with the hello app, and the classic copy-and-swap) answers a
# scripted Linux-like client; the packets are written as a pcap, read by tshark and matched.
# No network: packets go from function to function.

def _linux_client_exchange(answer, close):
    """Drive ``answer(ip_bytes, now) -> [ip_bytes]`` with a client that behaves like Linux
    running nc with empty stdin: SYN with Linux's options, ACK, an immediate ACK of each data
    segment (quickack) or one cumulative ACK, and on the server's FIN a FIN of its own."""
    from responder import wire
    from responder.wire import ACK as A, FIN as F, SYN as SY

    cli, srv = wire.ip_bytes(C), wire.ip_bytes(S)
    frames, t = [], [T0]
    ts = [5000]
    state = {"snd": C_ISN, "rcv": 0, "peer_ts": 0}

    def send(flags, **kw):
        ts[0] += 1
        opts = (wire.TcpOptions(mss=1460, sack_permitted=True, wscale=7,
                                timestamps=(ts[0], 0)) if flags & SY
                else wire.TcpOptions(timestamps=(ts[0], state["peer_ts"])))
        seg = wire.Segment(cli, srv, CPORT, SPORT, state["snd"], state["rcv"], flags,
                           64240 if flags & SY else 502, options=opts, ident=ts[0] & 0xFFFF)
        raw = bytes(wire.build_packet(seg))
        t[0] += 0.0001
        frames.append((t[0], raw))
        if flags & (SY | F):
            state["snd"] = (state["snd"] + 1) & 0xFFFFFFFF
        replies = []
        for out in answer(raw, t[0]):
            t[0] += 0.0002
            frames.append((t[0], out))
            replies.append(wire.parse(out))
        return replies

    queue = send(SY)
    fin_seen = False
    while queue:
        seg = queue.pop(0)
        if seg.options.timestamps:
            state["peer_ts"] = seg.options.timestamps[0]
        end = (seg.seq + len(seg.payload) + bool(seg.flags & SY) + bool(seg.flags & F))
        state["rcv"] = end & 0xFFFFFFFF
        if seg.flags & SY:
            queue += send(A)
        elif seg.flags & F:
            fin_seen = True
            if close == "separate":
                queue += send(A)
            queue += send(F | A)
        elif seg.payload and (close != "cumulative" or not queue):
            queue += send(A)
    if close == "classic-fin":                 # nc -q 1: the client closes on its own
        t[0] += 1.0
        send(F | A)
    assert fin_seen or close.startswith("classic")
    return frames


def _hello_stack():
    from responder import wire
    from responder.apps import make_app
    from responder.tcp import Config, Stack

    stack = Stack(Config(), isn_key=b"offline-test")
    stack.listen(wire.ip_bytes(S), SPORT, make_app("hello"))

    def answer(raw, now):
        return [bytes(wire.build_packet(s)) for s in stack.on_segment(wire.parse(raw), now)]
    return answer


def _classic():
    from responder.classic import ClassicResponder

    responder = ClassicResponder(port=SPORT)
    return lambda raw, now: [bytes(p) for p in responder.on_packet(raw)]


CASES.update({
    "real_hello_separate": lambda: _linux_client_exchange(_hello_stack(), "separate"),
    "real_hello_quickack": lambda: _linux_client_exchange(_hello_stack(), "quickack"),
    "real_hello_cumulative": lambda: _linux_client_exchange(_hello_stack(), "cumulative"),
    "real_classic": lambda: _linux_client_exchange(_classic(), "classic"),
    "real_classic_fin": lambda: _linux_client_exchange(_classic(), "classic-fin"),
})


@pytest.mark.parametrize("close", ["separate", "quickack", "cumulative"])
def test_hello_scn_describes_the_real_hello_responder(captures, hello, close):
    v = judge(captures, hello, f"real_hello_{close}")
    assert v.ok, v.failures


def test_classic_scn_describes_the_real_classic_responder(captures, classic):
    v = judge(captures, classic, "real_classic")
    assert v.ok, v.failures


def test_classic_close_scn_describes_the_half_open_close(captures):
    v = judge(captures, load_scenario("classic-close"), "real_classic_fin")
    assert v.ok, v.failures
    # and the plain classic scenario ignores what follows its 8 lines (trailing: allow)
    assert judge(captures, load_scenario("classic"), "real_classic_fin").ok


# ---------------------------------------------------------------- clients: N

@pytest.fixture(scope="module")
def two_clients():
    return load_scenario("two-clients")


def test_two_clients_each_connection_judged_on_its_own(captures, two_clients):
    v = judge(captures, two_clients, "two_hellos")
    assert v.ok, v.failures
    assert v.clients == [f"{C}.{CPORT}", f"{C}.{CPORT + 1}"]
    assert [c.ok for c in v.connections] == [True, True]
    assert v.reason == "two-clients.scn: all 10 lines matched on each of the 2 connections"
    notes = [n for ns in v.notes.values() for n in ns]
    assert any(n.endswith("(connection 2)") for n in notes)
    assert not any("not this connection" in n for n in notes)
    # the same capture against a one-client scenario: the second connection is ignored
    one = judge(captures, load_scenario("hello"), "two_hellos")
    assert one.ok and not one.connections
    assert sum(ns == ["not this connection (ignored)"] for ns in one.notes.values()) == 11


def test_two_clients_a_fault_in_one_connection_names_it(captures, two_clients):
    v = judge(captures, two_clients, "two_hellos_second_short")
    assert not v.ok and v.connections[0].ok and not v.connections[1].ok
    assert v.failures[0].startswith("two-clients.scn:29 (connection 2): packet "), v.failures
    assert "expected seq 12:32, got 12:31" in v.failures[0]


def test_two_clients_a_program_that_serves_one_fails(captures, two_clients):
    v = judge(captures, two_clients, "two_hellos_second_refused")
    assert not v.ok and v.connections[0].ok
    assert any(f.startswith("two-clients.scn:25 (connection 2): packet ") and
               "expected flags [S.], got [R.]" in f for f in v.failures), v.failures


def test_two_clients_one_connection_is_not_enough(captures, two_clients):
    v = judge(captures, two_clients, "hello_separate")
    assert not v.ok and len(v.connections) == 1 and v.connections[0].ok
    assert v.failures == ["two-clients.scn: clients: expected 2 connections (clients: 2), the "
                          "capture has 1"]


def test_two_clients_summary_result_and_ladder_show_each_connection(captures, two_clients,
                                                                       tmp_path):
    from harness.report.ladder import ladder_svg
    from harness.report.runfiles import format_summary, result_dict
    packets = captures["two_hellos_second_short"]
    v = match(two_clients, packets, C, S, SPORT)
    text = format_summary(two_clients, packets, v)
    assert f"clients {C}.{CPORT} (connection 1), {C}.{CPORT + 1} (connection 2)" in text
    assert f"connection 1 ({C}.{CPORT}): PASS" in text
    assert f"connection 2 ({C}.{CPORT + 1}): FAIL two-clients.scn:29 (connection 2)" in text
    assert "[✗ two-clients.scn:29 (connection 2)]" in text
    data = result_dict(two_clients, packets, v)
    assert data["scenario"]["clients"] == 2
    assert [c["ok"] for c in data["connections"]] == [True, False]
    assert data["connections"][1]["client"] == f"{C}.{CPORT + 1}"
    assert {p["direction"] for p in data["packets"]} == {"c>s", "s>c"}
    svg = ladder_svg(packets, v, "two")
    assert f"clients c1 .{CPORT}, c2 .{CPORT + 1}" in svg
    assert "c2 [P.] seq 12:31" in svg and "c1 [S] seq 0" in svg
