"""harness.judge.match, the parts the lessons added: relative timing ("each retransmission twice the
one before"), client ACK lines that name one packet each (window probes, duplicate ACKs), a
client retransmission that a line expects, renumbering from the connection's own ISNs (a
mid-connection SYN), measurements, and the run checks (states, counters, hold).

Packets are built directly as ``Pkt`` values: no tshark, microseconds per test."""

from __future__ import annotations

from harness.judge.dissect import ACK, FIN, PSH, RST, SYN, Pkt, flags_str
from harness.judge.match import check_run, match, measurements, renumber, transitions
from harness.judge.scenario import parse_scenario

C, S = "192.168.56.1", "192.168.56.100"
C_ISN, S_ISN = 5000, 9000


def pkt(n, t, server, flags, seq=0, ack=0, payload=b"", analysis=(), window=512):
    """Packet number ``n`` at time ``t``; ``seq``/``ack`` relative (raw = ISN + rel)."""
    own, peer = (S_ISN, C_ISN) if server else (C_ISN, S_ISN)
    return Pkt(number=n, time=t, epoch=1000 + t, src=S if server else C,
               dst=C if server else S, sport=80 if server else 40000,
               dport=40000 if server else 80, flags=flags, flags_str=flags_str(flags),
               seq=seq, ack=ack if flags & ACK else 0, seq_raw=(own + seq) & 0xFFFFFFFF,
               ack_raw=(peer + ack) & 0xFFFFFFFF if flags & ACK else 0,
               length=len(payload), window=window, window_calc=window, payload=payload,
               options=[], ip_id=1, ttl=64, ip_checksum="good", tcp_checksum="good",
               ip_checksum_ok=True, tcp_checksum_ok=True, analysis=frozenset(analysis))


def handshake():
    return [pkt(1, 0.0, False, SYN), pkt(2, 0.001, True, SYN | ACK, 0, 1),
            pkt(3, 0.002, False, ACK, 1, 1)]


HEAD = "responder: --app echo\n"
HS = "expect:\nc>s [S] seq 0\ns>c [S.] seq 0, ack 1\nc>s [.] ack 1\n"


def scn(body, head=HEAD):
    return parse_scenario(head + HS + body, "t.scn")


def rto_packets(gaps):
    ps = handshake() + [pkt(4, 0.01, False, PSH | ACK, 1, 1, b"ping\n"),
                        pkt(5, 0.02, True, PSH | ACK, 1, 6, b"ping\n")]
    t = 0.02
    for i, g in enumerate(gaps):
        t += g
        ps.append(pkt(6 + i, t, True, PSH | ACK, 1, 6, b"ping\n", analysis={"retransmission"}))
    return ps


RTO = ('c>s [P.] seq 1:6, payload "ping\\n"\n@e s>c [P.] seq 1:6, ack 6, payload "ping\\n"\n'
       '@r1 s>c [P.] seq 1:6, ack 6, analysis retransmission, after @e within 0.8-1.5s\n'
       '@r2 s>c [P.] seq 1:6, ack 6, analysis retransmission, after @r1 within 1.6x-2.5x\n'
       '@r3 s>c [P.] seq 1:6, ack 6, analysis retransmission, after @r2 within 1.6x-2.5x\n')


def test_relative_timing_accepts_doubling():
    v = match(scn(RTO, "responder: --app echo\ntrailing: allow\n"), rto_packets([1, 2, 4]))
    assert v.ok, v.failures


def test_relative_timing_refuses_a_constant_rto():
    v = match(scn(RTO, "responder: --app echo\ntrailing: allow\n"), rto_packets([1, 1, 1]))
    assert not v.ok
    assert v.failures[0].startswith("t.scn:10: packet 7 (server→client): expected after @r1 "
                                    "within 1.6x-2.5x, got 1.000s after packet 6 (1.00x")


def test_probe_lines_take_one_packet_each_and_respect_after():
    ps = handshake() + [pkt(4, 0.2, False, ACK, 0, 1, analysis={"keep_alive"}),
                        pkt(5, 0.2, True, ACK, 1, 1, window=0, analysis={"zero_window"}),
                        pkt(6, 0.6, False, ACK, 0, 1, analysis={"keep_alive"}),
                        pkt(7, 0.6, True, ACK, 1, 1, window=0, analysis={"zero_window"})]
    body = ("@p1 c>s [.] seq 0, ack 1, analysis keep_alive, after 3 within 0.1-1s\n"
            "s>c [.] seq 1, ack 1, win 0\n"
            "@p2 c>s [.] seq 0, ack 1, analysis keep_alive, after @p1 within 1.5x-3x\n"
            "s>c [.] seq 1, ack 1, win 0\n")
    v = match(scn(body), ps)
    assert v.ok, v.failures
    assert [r.packet for r in v.lines[3:]] == [4, 5, 6, 7]
    # one probe only: the second probe line has no packet of its own
    v = match(scn(body + ""), ps[:5] + [ps[6]])
    assert not v.ok and any("no client→server ACK [.] seq 0" in f for f in v.failures)


def test_a_line_can_expect_the_clients_retransmission():
    ps = handshake() + [pkt(4, 0.01, False, PSH | ACK, 1, 1, b"hi"),
                        pkt(5, 0.25, False, PSH | ACK, 1, 1, b"hi", analysis={"retransmission"}),
                        pkt(6, 0.26, True, ACK, 1, 3)]
    body = ('@hi c>s [P.] seq 1:3, payload "hi"\n'
            'c>s [P.] seq 1:3, analysis retransmission, after @hi within 0.15-1s\n'
            "s>c [.] seq 1, ack 3\n")
    v = match(scn(body), ps)
    assert v.ok, v.failures
    assert v.lines[4].packet == 5
    v = match(scn(body), ps[:4] + ps[5:])                 # no retransmission: it must fail
    assert not v.ok


def test_renumber_ignores_a_stray_syn():
    from dataclasses import replace
    ps = handshake() + [pkt(4, 0.05, False, RST, 105), pkt(5, 0.06, True, ACK, 1, 1),
                        pkt(6, 0.1, False, SYN, 105), pkt(7, 0.11, True, ACK, 1, 1)]
    # what Wireshark does after a new SYN: numbers relative to that SYN
    ps[-1] = replace(ps[-1], ack=(1 - 105) & 0xFFFFFFFF)
    ps[-2] = replace(ps[-2], seq=0)
    out = renumber(ps, C, S, 80)
    assert out[-1].ack == 1 and out[-2].seq == 105 and out[0] is ps[0]
    v = match(scn("c>s [R] seq 105\ns>c [.] seq 1, ack 1\nc>s [S] seq 105\n"
                  "s>c [.] seq 1, ack 1\n"), ps)
    assert v.ok, v.failures


def test_measurements():
    sc = scn(RTO, "responder: --app echo\ntrailing: allow\nmeasure: first @e @r1, "
                  "second @r1 @r2\n")
    v = match(sc, rto_packets([1, 2, 4]))
    m = measurements(sc, v)
    assert m == {"first": 1.0, "second": 2.0}


LOG = """listening on 192.168.56.100:80 app=hello
192.168.56.100:80 <> 192.168.56.1:4000 LISTEN => SYN-RECEIVED
192.168.56.100:80 <> 192.168.56.1:4000 SYN-RECEIVED => ESTABLISHED
192.168.56.100:80 <> 192.168.56.1:4000 ESTABLISHED => FIN-WAIT-1
192.168.56.100:80 <> 192.168.56.1:4000 FIN-WAIT-1 => CLOSING
192.168.56.100:80 <> 192.168.56.1:4000 CLOSING => TIME-WAIT
{"challenge_acks": 0}
"""


def _ok_verdict(head):
    sc = parse_scenario(head + HS, "t.scn")
    return sc, match(sc, handshake())


def test_states_in_order_pass_and_a_missing_one_fails():
    assert transitions(LOG)[2] == ("ESTABLISHED", "FIN-WAIT-1")
    sc, v = _ok_verdict(HEAD + "states: ESTABLISHED => FIN-WAIT-1, CLOSING => TIME-WAIT\n")
    assert check_run(sc, v, responder_log=LOG).ok
    sc, v = _ok_verdict(HEAD + "states: FIN-WAIT-1 => CLOSING, TIME-WAIT => CLOSED\n")
    v = check_run(sc, v, responder_log=LOG)
    assert not v.ok and v.reason.startswith("t.scn: states: the responder never logged "
                                            "TIME-WAIT => CLOSED")
    sc, v = _ok_verdict(HEAD + "states: CLOSING => TIME-WAIT, ESTABLISHED => FIN-WAIT-1\n")
    assert not check_run(sc, v, responder_log=LOG).ok          # order matters


def test_counters_and_hold():
    head = HEAD + "counters: challenge_acks == 2, rst_in_window == 1\nhold: 4s\n"
    sc, v = _ok_verdict(head)
    good = {"challenge_acks": 2, "drops": {"rst_in_window": 1}}
    assert check_run(sc, v, counters=good, held=True).ok
    sc, v = _ok_verdict(head)
    v = check_run(sc, v, counters={"challenge_acks": 0, "drops": {}}, held=False)
    assert v.failures == ["t.scn: counters: expected challenge_acks == 2, got 0",
                          "t.scn: counters: expected rst_in_window == 1, got no such counter",
                          "t.scn: hold: expected the client to be still held after 4 s, but "
                          "it had finished"]
    assert v.reason.endswith("(+2 more)")
    sc, v = _ok_verdict(head)
    assert "no counters" in check_run(sc, v, counters={}, held=True).reason


def test_states_and_counters_are_not_applicable_to_a_foreign_program():
    """A submission writes no tcplab log: its states:/counters: are n/a, neither passed nor
    failed, while hold: (seen from the outside) is still judged."""
    head = HEAD + ("states: ESTABLISHED => FIN-WAIT-1\ncounters: challenge_acks == 2\n"
                   "hold: 4s\n")
    sc, v = _ok_verdict(head)
    v = check_run(sc, v, responder_log="", counters={}, held=True, own_logs=False)
    assert v.ok and v.failures == []
    assert [n.split(":")[1].strip() for n in v.not_applicable] == ["states", "counters"]
    assert all("n/a" in n for n in v.not_applicable)
    sc, v = _ok_verdict(head)
    v = check_run(sc, v, counters={}, held=False, own_logs=False)
    assert not v.ok and v.failures == ["t.scn: hold: expected the client to be still held "
                                       "after 4 s, but it had finished"]


def test_fin_flags_helper_sanity():
    assert flags_str(FIN | ACK) == "F."


def test_summary_shows_run_checks_and_measurements():
    from harness.report.runfiles import format_summary
    sc = parse_scenario(HEAD + "states: ESTABLISHED => FIN-WAIT-1\ncounters: challenge_acks "
                        "== 2\nmeasure: rtt @sa @ack\nexpect:\nc>s [S] seq 0\n"
                        "@sa s>c [S.] seq 0, ack 1\n@ack c>s [.] ack 1\n", "t.scn")
    v = check_run(sc, match(sc, handshake()), responder_log=LOG, counters={"challenge_acks": 0})
    text = format_summary(sc, handshake(), v, measurements=measurements(sc, v))
    assert "✓ states: ESTABLISHED => FIN-WAIT-1" in text
    assert "✗ counters: challenge_acks == 2" in text
    assert "measured: rtt = 1.0 ms  (rtt @sa @ack)" in text


def test_two_clients_states_tell_at_once_from_one_after_the_other():
    """two-clients.scn's states: both connections ESTABLISHED before either TIME-WAIT.  A
    program that serves one client after the other logs the same transitions in another
    order, and fails."""
    from harness.judge.match import Verdict
    from harness.judge.scenario import load_scenario
    scn = load_scenario("two-clients")
    a, b = "192.168.56.100:80 <> 192.168.56.1:40001", "192.168.56.100:80 <> 192.168.56.1:40002"
    steps = ["SYN-RECEIVED => ESTABLISHED", "ESTABLISHED => FIN-WAIT-1",
             "FIN-WAIT-1 => FIN-WAIT-2", "FIN-WAIT-2 => TIME-WAIT"]
    serial = "\n".join([f"{a} {s}" for s in steps] + [f"{b} {s}" for s in steps])
    at_once = "\n".join(f"{c} {s}" for s in steps for c in (a, b))
    counters = {"established_total": 2, "connections_total": 2}
    ok = check_run(scn, Verdict(True, ""), responder_log=at_once, counters=counters)
    assert ok.ok, ok.failures
    bad = check_run(scn, Verdict(True, ""), responder_log=serial, counters=counters)
    assert not bad.ok
    assert bad.failures[0].startswith("two-clients.scn: states: the responder never logged "
                                      "FIN-WAIT-2 => TIME-WAIT")
