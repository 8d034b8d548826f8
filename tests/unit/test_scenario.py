"""harness.judge.scenario: the shipped scenarios parse; every malformed line is refused with file,
line and field."""

from __future__ import annotations

import pytest

from harness.judge.dissect import ACK, FIN, PSH, SYN
from harness.judge.scenario import (ANY, ScenarioError, Val, c_escape, c_unescape, list_scenarios,
                              load_scenario, parse_flags, parse_scenario)
from responder.contract import APPS

HEAD = "responder: --app hello\nexpect:\n"


def parse(body: str, head: str = HEAD):
    return parse_scenario(head + body, "t.scn")


def error(body: str, head: str = HEAD) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(body, head)
    return str(info.value)


def test_shipped_scenarios_parse():
    assert {"hello", "classic"} <= set(list_scenarios())
    for name in list_scenarios():
        load_scenario(name)


def test_hello_as_parsed():
    sc = load_scenario("hello")
    assert sc.path.endswith("scenarios/hello.scn") and sc.filename == "hello.scn"
    assert sc.responder_args == ("--app", "hello")
    assert (sc.client, sc.stdin, sc.trailing, sc.timeout) == ("nc", b"", "forbid", 10.0)
    synack = sc.expects[1]
    assert (synack.direction, synack.flags, synack.seq, synack.ack) == ("s>c", SYN | ACK, 0, 1)
    assert synack.win == Val("exact", 65535)
    assert str(synack.options) == "[mss 1460,sackOK,TS val * ecr echo,nop,wscale 7]"
    data = [e for e in sc.expects if e.flags == PSH | ACK]
    assert [(e.seq, e.length) for e in data] == [(1, 11), (12, 20), (32, 66)]
    assert data[0].payload == b"Hello TCP\n\0" and data[0].label == "hello"
    fin = next(e for e in sc.expects if e.flags == FIN | ACK and e.from_server)
    assert fin.timing.ref == data[0].index - 1 and (fin.timing.lo, fin.timing.hi) == (0, 1)
    acks = [e for e in sc.expects if e.is_pure_ack and not e.from_server]
    assert [e.ack for e in acks] == [1, 12, 32, 98, 99]


def test_field_forms():
    sc = parse('c>s [S] seq 0, win *, options {mss *,TS val * ecr 0}\n'
               's>c [S.] seq 0, ack 1, rawseq 0xaaaabbbb, win 1000-2000, options echo\n'
               '@d s>c [P.] seq 1:3, ack 1, payload "a\\x42", analysis none  # trailing\n'
               's>c [.] seq 3, ack 1, win echo, analysis retransmission keep_alive, '
               'after @d within 200ms-1.5s\n'
               's>c [F.] seq 3, ack 1, after prev within 2s, options [sack {1:2}{3:4},eol]\n'
               's>c [R.] seq 4, ack 1, after 1 within 0.1-0.2s, options []\n')
    e = sc.expects
    assert e[0].win == ANY and str(e[0].options) == "{mss *,TS val * ecr 0}"
    assert e[1].rawseq == 0xAAAABBBB and e[1].win == Val("range", 1000, 2000)
    assert e[1].options.mode == "echo"
    assert e[2].payload == b"aB" and e[2].length == 2 and e[2].analysis == frozenset()
    assert e[3].analysis == {"retransmission", "keep_alive"} and e[3].win == Val("echo")
    assert (e[3].timing.ref, e[3].timing.lo, e[3].timing.hi) == (2, 0.2, 1.5)
    assert (e[4].timing.ref, e[4].timing.lo, e[4].timing.hi) == (3, 0, 2)
    assert str(e[4].options) == "[sack {1:2}{3:4},eol]"
    assert e[5].timing.ref == 0 and e[5].options.items == ()


def test_header_defaults_and_values():
    sc = parse("c>s [S] seq 0\n", 'lesson: x\nresponder: --app echo --classic --isn 7\n'
               'client: nc -N\nstdin: "GET /\\r\\n"\nconditions: drop c>s first 2\ntimeout: 500ms\n'
               'trailing: allow\nexpect:\n')
    assert sc.responder_args == ("--app", "echo", "--classic", "--isn", "7")
    assert (sc.client, sc.client_args) == ("nc", ("-N",))
    assert sc.stdin == b"GET /\r\n" and sc.timeout == 0.5 and sc.trailing == "allow"
    assert sc.conditions == "drop c>s first 2"


@pytest.mark.parametrize("body,message", [
    ("c>s [S] seq x\n", "t.scn:3: field 'seq': expected N or N:M, got 'x'"),
    ("c>s [S] seq 5:2\n", "t.scn:3: field 'seq': end before start in '5:2'"),
    ("c>s [Q] seq 0\n", "t.scn:3: field 'flags': unknown flag 'Q' in [Q] (use F S R P U E W and .)"),
    ("c>s [SS] seq 0\n", "t.scn:3: field 'flags': flag 'S' twice in [SS]"),
    ("c>s [] seq 0\n", "t.scn:3: field 'flags': empty flags []"),
    ("x>y [S] seq 0\n", "t.scn:3: field 'direction': expected c>s or s>c, got 'x>y'"),
    ("c>s S seq 0\n", "t.scn:3: expected 'c>s [FLAGS] fields...' or 's>c [FLAGS] ...', "
                      "got 'c>s S seq 0'"),
    ("c>s [S] sequence 0\n", "t.scn:3: field 'sequence': unknown field (known: seq, rawseq, "
                             "ack, win, options, length, payload, analysis, after)"),
    ("c>s [S] seq 0, seq 0\n", "t.scn:3: field 'seq': given twice"),
    ("c>s [S] seq 0,, length 0\n", "t.scn:3: empty field (two commas?)"),
    ("s>c [S.] seq 1, ack 1\n", "t.scn:3: field 'seq': a SYN has relative seq 0"),
    ("c>s [S] ack 1\n", "t.scn:3: field 'ack': ack given but flags [S] have no '.'"),
    ("s>c [P.] seq 1:12, payload \"abc\"\n",
     "t.scn:3: field 'payload': length 3 contradicts length 11 given by seq"),
    ("s>c [P.] payload \"abc\n", "t.scn:3: unterminated string"),
    ("s>c [P.] payload \"\\q\"\n", "t.scn:3: field 'payload': unknown escape \\q"),
    ("s>c [.] win lots\n", "t.scn:3: field 'win': expected N or * or LO-HI or echo, got 'lots'"),
    ("s>c [.] options [mss 1460,tcpmd5]\n", "t.scn:3: field 'options': unknown option 'tcpmd5' "
     "(known: mss, wscale, sackOK, TS, nop, eol, sack)"),
    ("s>c [.] options [TS val 1]\n", "t.scn:3: field 'options': expected 'TS val X ecr Y', "
                                     "got 'TS val 1'"),
    ("s>c [.] options [mss 1460\n", "t.scn:3: unbalanced brackets"),
    ("s>c [.] analysis retrans\n", "t.scn:3: field 'analysis': unknown analysis flag 'retrans'"),
    ("s>c [.] after 1 within 1s\n", "t.scn:3: field 'after': 1 is not an earlier expect line"),
    ("c>s [S] seq 0\ns>c [.] after @x within 1s\n",
     "t.scn:4: field 'after': no earlier line is labelled @x"),
    ("c>s [S] seq 0\ns>c [.] after 1 within 2-1s\n", "t.scn:4: field 'after': empty interval"),
    ("c>s [S] seq 0\ns>c [.] after 1 within soon\n",
     "t.scn:4: field 'after': expected a duration like 1.5s or 200ms, got 'soon'"),
    ("@a c>s [S] seq 0\n@a s>c [S.] seq 0\n", "t.scn:4: field 'label': @a already names line 3"),
])
def test_bad_expect_lines(body, message):
    assert error(body).startswith(message)


@pytest.mark.parametrize("head,message", [
    ("responder: --app hello\ncolour: red\nexpect:\n",
     "t.scn:2: unknown key 'colour' (known: lesson, responder, client, clients, stdin, script, "
     "conditions, timeout, hold, linger, trailing, counters, states, measure, backends, cpu, "
     "expect)"),
    ("responder: --app hello\nresponder: --app echo\nexpect:\n",
     "t.scn:2: key 'responder' already given on line 1"),
    ("responder: --app gopher\nexpect:\n",
     "t.scn:1: key 'responder': argument --app: invalid choice: 'gopher' (choose from "
     f"{', '.join(repr(a) for a in APPS)}) (see python3 -m responder --help)"),
    ("responder: --classic\nexpect:\n",
     "t.scn:1: key 'responder': the following arguments are required: --app"),
    ("responder: --app hello --listen 1.2.3.4:80\nexpect:\n",
     "t.scn:1: key 'responder': --listen is set by the harness"),
    ("responder: --app hello --isn abc\nexpect:\n",
     "t.scn:1: key 'responder': argument --isn: invalid"),
    ("responder: --app hello\nclient: curl\nexpect:\n", "t.scn:2: key 'client': client must "
                                                       "be one of nc"),
    ("responder: --app hello\nstdin: hello\nexpect:\n",
     "t.scn:2: key 'stdin': expected a \"quoted string\", got 'hello'"),
    ("responder: --app hello\ntimeout: forever\nexpect:\n", "t.scn:2: key 'timeout': expected "
                                                            "a duration"),
    ("responder: --app hello\ntrailing: maybe\nexpect:\n", "t.scn:2: key 'trailing': expected "
                                                           "forbid or allow, got 'maybe'"),
    ("responder: --app hello\nthis is prose\nexpect:\n", "t.scn:2: expected 'key: value' or "
                                                         "'expect:', got 'this is prose'"),
    ("lesson: x\nexpect:\n", "t.scn: missing key 'responder'"),
    ("responder: --app hello\n", "t.scn:2: expect line before the 'expect:' line"),
    ("responder: --app hello\n# nothing\n", "t.scn: missing 'expect:' section"),
    ("responder: --app hello\nexpect:\n", "t.scn: 'expect:' section has no lines"),
])
def test_bad_headers(head, message):
    body = "" if "no lines" in message or "missing 'expect:'" in message else "c>s [S] seq 0\n"
    assert error(body, head).startswith(message)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ScenarioError, match="nope.scn: cannot read"):
        load_scenario(tmp_path / "nope.scn")


def test_error_carries_path_line_and_message():
    with pytest.raises(ScenarioError) as info:
        parse("c>s [S] seq x\n")
    assert (info.value.path, info.value.lineno) == ("t.scn", 3)


def test_c_escapes_round_trip():
    raw = b"Hello TCP\n\0\x01\xff\"\\\t\r"
    assert c_unescape(c_escape(raw)) == raw
    assert c_unescape(r"\101\0\x41") == b"A\0A"
    assert parse_flags("S.") == SYN | ACK and parse_flags("F.") == FIN | ACK


def test_any_text_is_a_scenario_or_a_scenario_error():
    from hypothesis import given, settings, strategies as st

    pieces = st.sampled_from(["c>s", "s>c", "[S.]", "[", "]", "{", "}", "seq", "1:12", ",",
                              "ack", "win", "*", "options", "mss", "TS val", "ecr", "echo",
                              '"', "\\", "payload", "after", "@a", "within", "1-2s", "#",
                              "analysis", "none", "length", "0x1", " ", "\n"])
    line = st.lists(st.one_of(pieces, st.text(max_size=3)), max_size=12).map("".join)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(line, max_size=5))
    def run(lines):
        try:
            parse("\n".join(lines) + "\n")
        except ScenarioError as exc:
            assert str(exc).startswith("t.scn")

    run()


def test_backends_key_marks_where_a_scenario_runs(tmp_path):
    from harness.judge.scenario import KNOWN_BACKENDS, ScenarioError, load_scenario
    assert load_scenario("nagle-linux").backends == ("netns",)
    assert not load_scenario("nagle-linux").runs_on("qemu")
    assert load_scenario("hello").backends == KNOWN_BACKENDS
    bad = tmp_path / "bad.scn"
    bad.write_text("lesson: x\nresponder: --app hello\nbackends: netns, virtualbox\nexpect:\n"
                   "c>s [S] seq 0\n")
    with pytest.raises(ScenarioError, match="backends"):
        load_scenario(bad)


def test_cpu_key_marks_a_lesson_that_needs_the_cpu_to_itself(tmp_path):
    from harness.judge.scenario import ScenarioError, load_scenario
    assert load_scenario("hello").cpu_alone is False
    for value, alone in (("alone", True), ("shared", False)):
        p = tmp_path / f"{value}.scn"
        p.write_text(f"responder: --app hello\ncpu: {value}\nexpect:\nc>s [S] seq 0\n")
        assert load_scenario(p).cpu_alone is alone
    bad = tmp_path / "bad.scn"
    bad.write_text("responder: --app hello\ncpu: lonely\nexpect:\nc>s [S] seq 0\n")
    with pytest.raises(ScenarioError, match="key 'cpu': expected alone or shared, got 'lonely'"):
        load_scenario(bad)


@pytest.mark.parametrize("args,message", [
    ("--app hello --connect 192.168.56.1:9", "--connect would make the responder open"),
    ("--app http --http-file /etc/shadow", "--http-file would make the responder serve a file"),
    ("--app hello --fault wrong-seq", "--fault is the harness's switch"),
    ("--app hello --table", "--table prints the state table"),
    ("--app hello --help", "-h/--help is not a responder argument"),
    ("--app hello --listen 1.2.3.4:80", "--listen is set by the harness"),
    ("--app hello --lis 1.2.3.4:80", "--listen is set by the harness"),      # an abbreviation
    ("--app hello --msl2 nan", "--msl2 must be 0..600 seconds, got nan"),
    ("--app hello --msl2 1e9", "--msl2 must be 0..600 seconds"),
    ("--app hello --isn 0x1ffffffff", "--isn must be 0..0xffffffff"),
    ("--app hello --nagle", "unrecognized arguments: --nagle"),
])
def test_responder_line_is_judged_by_the_responders_own_parser(args, message):
    """The responder's argument parser (responder.cli) decides; what a scenario may not ask of
    the responder (leave the lab, read a file, the harness's own switches) is refused by name."""
    assert message in error("c>s [S] seq 0\n", f"responder: {args}\nexpect:\n")


def test_responder_line_gives_the_fixed_isn():
    from harness.judge.scenario import responder_args
    assert responder_args("--app echo --isn 0x10") == (("--app", "echo", "--isn", "0x10"), 16)
    assert responder_args("--app hello --classic")[1] == 0xAAAABBBB
    assert responder_args("--app hello")[1] is None
    assert parse("c>s [S] seq 0\n", "responder: --app echo --isn=7\nexpect:\n").isn == 7
