"""The scenario format's additions for grading foreign responders (docs/scenarios.md): what TCP
requires rather than what tcplab's responder happens to send.  Packets are built as plain
:class:`Pkt` records (no tshark), so each rule is checked in microseconds."""

from __future__ import annotations

import pytest

from harness.judge.dissect import ACK, FIN, PSH, SYN, Pkt, flags_str
from harness.judge.match import match
from harness.judge.scenario import ScenarioError, parse_flag_spec, parse_flags, parse_scenario

C, S, CPORT = "192.168.56.1", "192.168.56.100", 40000
C_ISN, S_ISN = 1000, 0xAAAABBBB


def pkt(n: int, from_client: bool, flags: int, seq: int, ack: int = 0, payload: bytes = b"",
        t: float | None = None, checksum_ok: bool = True) -> Pkt:
    """Packet number ``n`` of the connection, relative ``seq``/``ack``."""
    own, peer = (C_ISN, S_ISN) if from_client else (S_ISN, C_ISN)
    src, dst, sport, dport = (C, S, CPORT, 80) if from_client else (S, C, 80, CPORT)
    return Pkt(number=n, time=n * 0.01 if t is None else t, epoch=0.0, src=src, dst=dst,
               sport=sport, dport=dport, flags=flags, flags_str=flags_str(flags), seq=seq,
               ack=ack if flags & ACK else 0, seq_raw=(own + seq) & 0xFFFFFFFF,
               ack_raw=(peer + ack) & 0xFFFFFFFF if flags & ACK else 0,
               length=len(payload), window=64240, window_calc=None, payload=payload,
               options=[], ip_id=0, ttl=64, ip_checksum="good", tcp_checksum="good",
               ip_checksum_ok=True, tcp_checksum_ok=checksum_ok)


def scn(expect: str, head: str = "responder: --app hello\n"):
    return parse_scenario(head + "expect:\n" + expect, "t.scn")


HANDSHAKE = [pkt(1, True, SYN, 0), pkt(2, False, SYN | ACK, 0, 1), pkt(3, True, ACK, 1, 1)]
HANDSHAKE_LINES = "c>s [S] seq 0\ns>c [S.] seq 0, ack 1\nc>s [.] ack 1\n"


# ---------------------------------------------------------------- [P?.]: a flag that may be set

def test_flag_spec_parses_optional_letters():
    assert parse_flag_spec("P?.") == (ACK, PSH)
    assert parse_flag_spec("F?P?.") == (ACK, FIN | PSH)
    assert parse_flag_spec("FP.") == (FIN | PSH | ACK, 0)
    assert parse_flags("S.") == SYN | ACK


@pytest.mark.parametrize("text,why", [("S?.", "'?' must follow"), ("?.", "'?' must follow"),
                                      (".?", "'?' must follow"), ("P?P.", "twice"),
                                      ("P??.", "'?' must follow"),
                                      ("P?", "no flag that is always set"),
                                      ("F?P?", "no flag that is always set")])
def test_flag_spec_refuses_what_it_cannot_mean(text, why):
    with pytest.raises(ValueError, match=why):
        parse_flag_spec(text)


def test_a_bad_flag_spec_names_the_file_line_and_field():
    with pytest.raises(ScenarioError, match=r"t\.scn:6: field 'flags': '\?' must follow"):
        scn(HANDSHAKE_LINES + "s>c [S?.] seq 0\n")


def test_a_maybe_line_before_expect_is_named_as_such():
    with pytest.raises(ScenarioError, match="t.scn:2: expect line before the 'expect:' line"):
        parse_scenario("responder: --app hello\nmaybe s>c [F.] seq 1\nexpect:\n"
                       + HANDSHAKE_LINES, "t.scn")


def test_optional_flags_are_refused_where_plain_flags_are_expected():
    with pytest.raises(ValueError, match="optional flags"):
        parse_flags("P?.")


def test_optional_psh_accepts_both_and_nothing_else():
    sc = scn(HANDSHAKE_LINES + 's>c [P?.] seq 1:3, ack 1, payload "hi"\n')
    for flags in (ACK, PSH | ACK):
        v = match(sc, HANDSHAKE + [pkt(4, False, flags, 1, 1, b"hi")], C, S, 80)
        assert v.ok, v.reason
    v = match(sc, HANDSHAKE + [pkt(4, False, FIN | PSH | ACK, 1, 1, b"hi")], C, S, 80)
    assert not v.ok and "expected flags [P?.], got [FP.]" in v.reason


def test_a_required_flag_stays_required_next_to_an_optional_one():
    sc = scn(HANDSHAKE_LINES + 's>c [P?.] seq 1:3, ack 1, payload "hi"\n')
    v = match(sc, HANDSHAKE + [pkt(4, False, PSH, 1, 0, b"hi")], C, S, 80)
    assert not v.ok and "expected flags [P?.], got [P]" in v.reason


# ---------------------------------------------------------------- maybe s>c: a packet that may come

MAYBE_FIN = (HANDSHAKE_LINES + 's>c [P?.] seq 1:3, ack 1, payload "hi"\n'
             "maybe s>c [F.] seq 3, ack 1\n"
             '@hi c>s [P.] seq 1:4, payload "hi\\n"\n'
             "s>c [.] ack 4\n")
DATA = [pkt(4, False, PSH | ACK, 1, 1, b"hi"), pkt(5, True, ACK, 1, 3)]


def test_a_maybe_line_matches_its_packet_when_it_comes():
    pk = HANDSHAKE + DATA + [pkt(6, False, FIN | ACK, 3, 1), pkt(7, True, PSH | ACK, 1, 4, b"hi\n"),
                             pkt(8, False, ACK, 4, 4)]
    v = match(scn(MAYBE_FIN), pk, C, S, 80)
    assert v.ok, v.reason
    assert v.lines[4].packet == 6


def test_a_maybe_line_may_be_absent():
    pk = HANDSHAKE + DATA + [pkt(6, True, PSH | ACK, 1, 3, b"hi\n"), pkt(7, False, ACK, 3, 4)]
    v = match(scn(MAYBE_FIN), pk, C, S, 80)
    assert v.ok, v.reason
    assert v.lines[4].ok and v.lines[4].packet is None and "maybe: absent" in v.lines[4].message
    assert v.lines[6].packet == 7


def test_a_maybe_line_at_the_end_may_be_absent_but_its_packet_is_still_judged():
    sc = scn(HANDSHAKE_LINES + "maybe s>c [F.] seq 1, ack 1\n")
    assert match(sc, HANDSHAKE, C, S, 80).ok
    bad = match(sc, HANDSHAKE + [pkt(4, False, FIN | ACK, 1, 1, checksum_ok=False)], C, S, 80)
    assert not bad.ok and "expected a correct TCP checksum" in bad.reason


def test_a_maybe_line_does_not_excuse_the_packet_after_it():
    pk = HANDSHAKE + DATA + [pkt(6, True, PSH | ACK, 1, 3, b"hi\n"), pkt(7, False, ACK, 3, 1)]
    v = match(scn(MAYBE_FIN), pk, C, S, 80)
    assert not v.ok and "packet 7 (server→client): expected ack 4, got 1" in v.reason


def test_maybe_is_for_responder_lines_only():
    with pytest.raises(ScenarioError, match="t.scn:6: field .maybe.: only a responder line"):
        scn(HANDSHAKE_LINES + "maybe c>s [F.] seq 1\n")


# ---------------------------------------------------------------- drop c>s ack-only first K

def test_ack_only_drop_needs_no_fixed_isn_and_matches_flags_not_numbers():
    from harness.lab.firewall import drop_rules
    sc = parse_scenario("responder: --app hello\nconditions: drop c>s ack-only first 2\n"
                        "expect:\n" + HANDSHAKE_LINES, "t.scn")
    (cond,) = sc.condition_list
    assert (cond.kind, cond.direction, cond.field, cond.count) == ("drop", "c>s", "ack-only", 2)
    assert sc.isn is None
    rules = drop_rules(cond, sc.isn, C)
    assert len(rules) == 2
    r = rules[0].args()
    assert r[:6] == ["INPUT", "-p", "tcp", "-s", C, "--dport"]
    i = r.index("--tcp-flags")
    assert r[i + 1:i + 3] == ["SYN,ACK,FIN,RST,PSH", "ACK"]
    assert "u32" not in r and r[-2:] == ["-j", "DROP"]


@pytest.mark.parametrize("text", ["drop s>c ack-only first 1", "drop c>s ack-only 1",
                                  "drop c>s ack-only first x"])
def test_ack_only_drop_is_refused_in_other_shapes(text):
    with pytest.raises(ScenarioError, match="unknown condition"):
        parse_scenario(f"responder: --app hello\nconditions: {text}\nexpect:\n" +
                       HANDSHAKE_LINES, "t.scn")


# ---------------------------------------------------------------- scapy step syn-badsum

class _Tx:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append(bytes(data))


def test_syn_badsum_is_the_connect_syn_with_a_broken_tcp_checksum():
    from harness.judge.dissect import decode_ip_tcp
    from harness.judge.scenario import Step, parse_script
    from harness.run.clients import ScapyPeer
    assert parse_script("syn-badsum; sleep 0.5s; connect") == (
        Step("syn-badsum"), Step("sleep", 0.5), Step("connect"))
    peer = object.__new__(ScapyPeer)             # no sockets, no iptables: only its packets
    peer.dst, peer.dport, peer.sport, peer.src = S, 80, 41000, C
    peer.iss = peer.snd_nxt = 12345
    peer.rcv_nxt, peer.delayed_ack, peer.ack_sent, peer.ack_timer = None, 0.0, None, None
    peer.tx = _Tx()
    peer._step(Step("syn-badsum"))
    peer.send("S", options=[("MSS", 1460)])      # what `connect` sends first
    bad, good = (decode_ip_tcp(p) for p in peer.tx.sent)
    assert not bad["tcp_checksum_ok"] and good["tcp_checksum_ok"] and bad["ip_checksum_ok"]
    assert {k: v for k, v in bad.items() if k != "tcp_checksum_ok"} == \
        {k: v for k, v in good.items() if k != "tcp_checksum_ok"}
    assert bad["flags"] == SYN and bad["seq_raw"] == 12345
    assert peer.tx.sent[0][:36] == peer.tx.sent[1][:36]


# ---------------------------------------------------------------- options valid

def _synack_with(syn_opts, synack_opts):
    syn, synack, ack = (pkt(1, True, SYN, 0), pkt(2, False, SYN | ACK, 0, 1),
                        pkt(3, True, ACK, 1, 1))
    syn.options, synack.options = syn_opts, synack_opts
    return [syn, synack, ack]


OFFER = [("mss", 1460), ("sackOK", None), ("TS", (5, 0)), ("nop", None), ("wscale", 7)]


@pytest.mark.parametrize("synack_opts", [
    [], [("mss", 536)], list(OFFER),
    [("mss", 1460), ("nop", None), ("wscale", 5), ("nop", None), ("nop", None),
     ("TS", (5, 0)), ("sackOK", None), ("eol", None)],          # the lecture's copied SYN
    [("mss", 1460), ("unknown-30", b"\x00\x01")],                # unknown kinds are ignored
])
def test_options_valid_accepts_what_tcp_allows(synack_opts):
    sc = scn("c>s [S] seq 0\ns>c [S.] seq 0, ack 1, options valid\nc>s [.] ack 1\n")
    v = match(sc, _synack_with(list(OFFER), synack_opts), C, S, 80)
    assert v.ok, v.reason


@pytest.mark.parametrize("syn_opts,synack_opts,why", [
    (OFFER, [("mss", 1460), ("bad", b"\x08\x20")], "the option list is malformed"),
    (OFFER, [("mss", 0)], "mss 0"),
    (OFFER, [("wscale", 15)], "wscale 15 is above 14"),
    ([("mss", 1460)], [("mss", 1460), ("TS", (1, 5))], "TS in the SYN,ACK, but the SYN did not "
                                                        "offer it"),
    ([("mss", 1460)], [("sackOK", None)], "sackOK in the SYN,ACK, but the SYN did not"),
])
def test_options_valid_names_what_tcp_forbids(syn_opts, synack_opts, why):
    sc = scn("c>s [S] seq 0\ns>c [S.] seq 0, ack 1, options valid\nc>s [.] ack 1\n")
    v = match(sc, _synack_with(syn_opts, synack_opts), C, S, 80)
    assert not v.ok and "expected options valid" in v.reason and why in v.reason, v.reason


def test_options_valid_on_data_refuses_syn_only_options():
    sc = scn(HANDSHAKE_LINES + 's>c [P?.] seq 1:3, ack 1, payload "hi", options valid\n')
    data = pkt(4, False, PSH | ACK, 1, 1, b"hi")
    data.options = [("mss", 1460)]
    v = match(sc, HANDSHAKE + [data], C, S, 80)
    assert not v.ok and "mss outside a SYN" in v.reason
