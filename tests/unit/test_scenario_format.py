"""harness.judge.scenario: the format's additions for the lessons -- client kinds and scripts,
hold, linger, counters, states, measure, conditions, relative timing -- and what they refuse
(file, line, field); harness.lab.firewall's drop rules, harness.run.conditions, and
harness.run.clients' command lines."""

from __future__ import annotations

import sys

import pytest

from harness.run.clients import client_argv, steps_from_json, steps_to_json
from harness.lab.firewall import drop_rules
from harness.judge.scenario import Condition, CounterCheck, Step, list_scenarios, load_scenario
from tests.unit.test_scenario import error as _error, parse as _parse

EXPECT = "expect:\nc>s [S] seq 0\n@a s>c [S.] seq 0, ack 1\n@b c>s [.] ack 1, after @a within 1s\n"


def parse(head: str, body: str = EXPECT):
    return _parse(body, head)


def error(head: str, body: str = EXPECT) -> str:
    return _error(body, head)


def test_every_shipped_lesson_parses_and_says_what_it_teaches():
    names = list_scenarios()
    for lesson in ("hello", "classic", "classic-echo-bug", "delayed-ack", "nagle-delayed-ack",
                   "rto-backoff", "tarpit", "close-states", "challenge-ack", "miniweb"):
        assert lesson in names
    for name in names:
        assert load_scenario(name).lesson, name


def test_python_client_script():
    sc = parse('responder: --app http\nclient: python --nodelay --no-quickack\n'
               'script: send "GET / HTTP/1.0\\r\\n"; sleep 200ms; send "\\r\\n"; recv 5; '
               'recv-all; shutdown; close\n')
    assert sc.client == "python" and sc.client_args == ("--nodelay", "--no-quickack")
    assert parse("responder: --app echo\nclient: python --mss 88 --nodelay\n").client_args == (
        "--mss", "88", "--nodelay")
    assert sc.script == (Step("send", b"GET / HTTP/1.0\r\n"), Step("sleep", 0.2),
                         Step("send", b"\r\n"), Step("recv", 5), Step("recv-all"),
                         Step("shutdown"), Step("close"))
    assert str(sc.script[0]) == 'send "GET / HTTP/1.0\\r\\n"' and str(sc.script[1]) == "sleep 0.2s"


def test_scapy_and_nc_scripts():
    assert parse("responder: --app echo\nclient: scapy --delayed-ack\nscript: connect\n"
                 ).client_args == ("--delayed-ack",)
    sc = parse("responder: --app echo\nclient: scapy\n"
               'script: connect; send "x"; recv 1; rst 100; syn 100; fin; wait-fin; ack\n')
    assert [s.kind for s in sc.script] == ["connect", "send", "recv", "rst", "syn", "fin",
                                           "wait-fin", "ack"]
    assert sc.script[3].arg == 100
    sc = parse('responder: --app hello\nclient: nc -q 1\nscript: send "a"; sleep 1s; send "b"\n')
    assert sc.client_args == ("-q", "1") and len(sc.script) == 3


@pytest.mark.parametrize("head,message", [
    ('responder: --app hello\nscript: send "a"; recv 1\n',
     "t.scn:2: key 'script': the nc client cannot 'recv' (it can: send, sleep)"),
    ("responder: --app hello\nclient: python\nscript: connect\n",
     "t.scn:3: key 'script': the python client cannot 'connect'"),
    ("responder: --app hello\nclient: python\nscript: fly away\n",
     "t.scn:3: key 'script': unknown step 'fly'"),
    ("responder: --app hello\nclient: python\nscript: recv\n",
     "t.scn:3: key 'script': recv needs a byte count"),
    ("responder: --app hello\nclient: python\nscript: sleep 1; close\n",
     "t.scn:3: key 'script': expected a duration"),
    ('responder: --app hello\nstdin: "a"\nscript: send "b"\n',
     "t.scn:3: key 'script': give either stdin or a script (stdin is on line 2)"),
    ('responder: --app hello\nclient: python\nstdin: "a"\n',
     "t.scn:3: key 'stdin': only nc reads stdin"),
    ("responder: --app hello\nclient: python --fast\n",
     "t.scn:2: key 'client': python option '--fast' is not allowed in a scenario (allowed: "
     "--nodelay, --no-quickack, --mss N)"),
    ("responder: --app hello\nclient: python --mss\n",
     "t.scn:2: key 'client': --mss needs a number 0..65535, got 'nothing'"),
    ("responder: --app hello\ncounters: retransmissions = 3\n",
     "t.scn:2: key 'counters': expected 'NAME OP N'"),
    ("responder: --app hello\nstates: ESTABLISHED => FIN_WAIT_1\n",
     "t.scn:2: key 'states': unknown state 'FIN_WAIT_1'"),
    ("responder: --app hello\nstates: ESTABLISHED\n",
     "t.scn:2: key 'states': expected 'STATE => STATE'"),
    ("responder: --app hello\nmeasure: stall @a @nope\n",
     "t.scn:2: key 'measure': no expect line is labelled @nope"),
    ("responder: --app hello\nmeasure: stall from a to b\n",
     "t.scn:2: key 'measure': expected 'NAME @from @to'"),
    ("responder: --app hello\nhold: forever\n", "t.scn:2: key 'hold': expected a duration"),
    ("responder: --app hello\nconditions: drop c>s ack 6 first 3\n",
     "t.scn:2: key 'conditions': 'drop c>s ack 6 first 3' names a sequence number, which "
     "needs a fixed ISN"),
    ("responder: --app hello --isn 1\nconditions: drop s>c ack 6 first 3\n",
     "t.scn:2: key 'conditions': 'drop s>c ack 6 first 3': only 'c>s ack N' and 's>c seq N'"),
    ("responder: --app hello\nconditions: jitter 5ms\n",
     "t.scn:2: key 'conditions': unknown condition 'jitter 5ms'"),
    ("responder: --app hello --msl2 long\n",
     "t.scn:1: key 'responder': argument --msl2: invalid float value: 'long'"),
])
def test_bad_additions_name_file_line_and_key(head, message):
    assert error(head).startswith(message)


def test_run_checks_and_conditions_as_parsed():
    sc = parse("responder: --app echo --isn 1000 --nodelay --msl2 0.5\n"
               "hold: 4s\nlinger: 500ms\n"
               "counters: retransmissions == 3, tarpit_held >= 1, connections_open < 1\n"
               "states: SYN-RECEIVED => ESTABLISHED, FIN-WAIT-1 => CLOSING\n"
               "measure: rtt @a @b\n"
               "conditions: drop c>s ack 6 first 3; drop s>c first 1; delay 100ms; loss 5%\n")
    assert (sc.hold, sc.linger) == (4.0, 0.5)
    assert sc.counters == (CounterCheck("retransmissions", "==", 3),
                           CounterCheck("tarpit_held", ">=", 1),
                           CounterCheck("connections_open", "<", 1))
    assert sc.states == (("SYN-RECEIVED", "ESTABLISHED"), ("FIN-WAIT-1", "CLOSING"))
    assert [(m.name, m.start, m.end) for m in sc.measures] == [("rtt", 1, 2)]
    c = sc.condition_list
    assert c[0] == Condition("drop", "c>s", "ack", 6, 3, text="drop c>s ack 6 first 3")
    assert (c[1].direction, c[1].field, c[1].count) == ("s>c", "", 1)
    assert (c[2].kind, c[2].amount, c[3].kind, c[3].amount) == ("delay", "100ms", "loss", "5%")


def test_counter_checks():
    assert CounterCheck("x", ">=", 3).holds(3) and not CounterCheck("x", ">=", 3).holds(2)
    assert CounterCheck("x", "!=", 0).holds(1) and not CounterCheck("x", "==", 0).holds(None)


def test_relative_timing():
    sc = parse("responder: --app echo\n", "expect:\n@o s>c [P.] seq 1:2, ack 1\n"
               "@r1 s>c [P.] seq 1:2, ack 1, after @o within 0.8-1.5s\n"
               "@r2 s>c [P.] seq 1:2, ack 1, after @r1 within 1.6x-2.5x\n")
    t = sc.expects[2].timing
    assert (t.ref, t.lo, t.hi, t.relative) == (1, 1.6, 2.5, True)
    assert str(t) == "after @r1 within 1.6x-2.5x"
    msg = error("responder: --app echo\n", "expect:\n@o s>c [P.] seq 1:2, ack 1\n"
                "s>c [P.] seq 1:2, ack 1, after @o within 1.5x-2x\n")
    assert msg.startswith("t.scn:4: field 'after': @o has no 'after' of its own")


def test_a_stray_client_syn_may_have_any_seq():
    sc = parse("responder: --app echo\n", "expect:\nc>s [S] seq 0\nc>s [S] seq 105\n")
    assert sc.expects[1].seq == 105


def test_iptables_rules_for_drops():
    sc = parse("responder: --app echo --isn 1000\nconditions: drop c>s ack 6 first 3; "
               "drop s>c first 2\n")
    first, second = sc.condition_list
    rules = [r.args() for r in drop_rules(first, sc.isn, "192.168.56.1")]
    assert len(rules) == 3 and rules[0] == rules[2]
    r = rules[0]
    assert r[:6] == ["INPUT", "-p", "tcp", "-s", "192.168.56.1", "--dport"]
    assert "0>>22&0x3C@8=0x3ee" in r                    # 1000 + 6, the TCP ack field
    assert r[r.index("--mode") + 1] == "nth" and r[-2:] == ["-j", "DROP"]
    rules = [r.args() for r in drop_rules(second, sc.isn, "192.168.56.1")]
    assert len(rules) == 2 and rules[0][0] == "OUTPUT" and "-m u32" not in " ".join(rules[0])
    classic = parse("responder: --app hello --classic\nconditions: drop s>c seq 1 first 1\n")
    assert "0>>22&0x3C@4=0xaaaabbbc" in drop_rules(classic.condition_list[0], classic.isn,
                                                    "192.168.56.1")[0].args()


class _Backend:
    vm_ip = "192.168.56.100"
    host_ip = "192.168.56.1"
    name = "vagrant"

    def __init__(self, prefix):
        self.prefix = prefix

    @property
    def host_side_isolated(self):
        return bool(self.prefix)

    def host_argv(self, argv):
        return self.prefix + list(argv)

    def host_python_argv(self, module, args):
        return self.host_argv([sys.executable, "-m", module, *args])


def test_client_command_lines():
    nc = parse('responder: --app hello\nclient: nc -q 1\nstdin: ""\n')
    assert client_argv(_Backend(["ip", "netns", "exec", "x-host"]), nc, 80) == [
        "ip", "netns", "exec", "x-host", "/bin/nc.openbsd", "-q", "1", "192.168.56.100", "80"]
    py = parse('responder: --app hello\nclient: python --nodelay\nscript: send "a\\0"; recv 2\n')
    argv = client_argv(_Backend(["ip", "netns", "exec", "x-host"]), py, 80)
    assert argv[4:7] == [argv[4], "-m", "harness.run.clients"] and "--nodelay" in argv
    script = argv[argv.index("--script") + 1]
    assert steps_from_json(script) == list(py.script)
    assert steps_from_json(steps_to_json(py.script))[0].arg == b"a\0"
    scapy = parse("responder: --app hello\nclient: scapy\nscript: connect\n")
    argv = client_argv(_Backend(["ip", "netns", "exec", "x-host"]), scapy, 80, sport=41234)
    assert argv[argv.index("--src"):argv.index("--src") + 4] == [
        "--src", "192.168.56.1", "--sport", "41234"]


def test_the_scapy_client_where_it_cannot_have_its_rst_rule(monkeypatch):
    from harness.run import clients
    from harness.util import LabError
    scapy = parse("responder: --app hello\nclient: scapy\nscript: connect\n")
    monkeypatch.setattr(clients.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="run as root"):
        client_argv(_Backend([]), scapy, 80)


def test_lessons_list_every_scenario_in_the_lectures_order_then_doctor():
    from harness.judge.scenario import format_lessons, lessons
    rows = lessons()
    names = [n for n, _ in rows]
    assert names[0] == "hello" and names[-1] == "doctor"
    assert set(list_scenarios()) <= set(names)
    assert all(lesson for _, lesson in rows)
    assert format_lessons().splitlines()[0].startswith("hello ")


class _SSH:
    """Records the commands; ``tc`` fails like a kernel without sch_netem."""

    def __init__(self):
        self.commands = []

    def run(self, command, check=True, timeout=60):
        from harness.run.ssh import RemoteResult
        self.commands.append(command)
        if command.startswith("tc qdisc add"):
            return RemoteResult(command, 2, "", "Error: Specified qdisc kind is unknown.")
        return RemoteResult(command, 0, "192.168.56.1 dev eth1 src 192.168.56.100", "")


def test_conditions_are_added_then_removed_even_on_failure():
    from harness.run.conditions import Conditions
    from harness.util import LabError
    sc = parse("responder: --app echo --isn 1000\nconditions: drop c>s ack 6 first 2\n")
    ssh = _SSH()
    with pytest.raises(RuntimeError):
        with Conditions(ssh, sc, "192.168.56.1"):
            assert sum(c.startswith("iptables -w 10 -A INPUT") for c in ssh.commands) == 2
            raise RuntimeError("the client broke")
    assert sum(c.startswith("iptables -w 10 -D INPUT") for c in ssh.commands) == 2
    sc = parse("responder: --app echo --isn 1000\n"
               "conditions: drop s>c first 1; delay 100ms\n")
    ssh = _SSH()
    with pytest.raises(LabError, match="needs tc netem"):
        with Conditions(ssh, sc, "192.168.56.1"):
            pass
    assert ssh.commands[-1].startswith("iptables -w 10 -D OUTPUT")  # the drop rule went again
