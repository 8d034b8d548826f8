"""What a scenario file cannot make the harness do (issue 15, findings 3-5): run nc with options
that run programs or reach a proxy, wait unboundedly, repeat a command unboundedly, send more
than 16 KB, make the parser slow, or read something that is not a small regular file.  Each
test here failed on the parser before the limits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.judge.scenario import (MAX_FILE_BYTES, MAX_LINE_CHARS, NC_PATH, ScenarioError,
                                    load_scenario)
from tests.conftest import ROOT
from tests.unit.test_scenario import error as _error

EXPECT = "c>s [S] seq 0\n@a s>c [S.] seq 0, ack 1\n"


def error(head: str, body: str = EXPECT) -> str:
    return _error(body, "responder: --app hello\n" + head + "expect:\n")


@pytest.mark.parametrize("client", [
    "nc -e /bin/sh", "nc -c 'id > /tmp/x'", "nc -X connect -x 10.0.0.1:3128", "nc -lp 80",
    "nc -q 1 -e /bin/sh", "nc -w", "nc -w 100000", "nc -Nw2", "python --nodelay -e x",
])
def test_client_options_outside_the_allow_list_are_refused_with_file_and_line(client):
    msg = error(f"client: {client}\n")
    assert msg.startswith("t.scn:2: key 'client': "), msg
    assert "not allowed in a scenario" in msg or "needs a number" in msg, msg


def test_nc_is_debians_openbsd_netcat_by_absolute_path():
    from tests.unit.test_scenario_format import _Backend, parse
    from harness.run.clients import client_argv
    scn = parse('responder: --app hello\nclient: nc -N -q 1 -w 5\nstdin: ""\n')
    argv = client_argv(_Backend(["ip", "netns", "exec", "x-host"]), scn, 80)
    assert argv[4:] == [NC_PATH, "-N", "-q", "1", "-w", "5", "192.168.56.100", "80"]
    assert NC_PATH == "/bin/nc.openbsd"


@pytest.mark.parametrize("head,needle", [
    ("timeout: 1000000000s\n", "expected a duration"),
    ("timeout: 100000s\n", "longer than the 600 s"),
    ("timeout: " + "9" * 400 + "s\n", "expected a duration"),
    ("hold: 601s\n", "longer than the 600 s"),
    ("linger: 700000ms\n", "longer than the 600 s"),
    ("timeout: nan s\n", "expected a duration"),
    ("timeout: infs\n", "expected a duration"),
    ("timeout: 1e9s\n", "expected a duration"),
    ("client: python\nscript: sleep 601s\n", "longer than the 600 s"),
    ('script: send "a"; sleep 99999s\n', "longer than the 600 s"),
])
def test_durations_are_bounded(head, needle):
    assert needle in error(head)


def test_after_bounds_are_bounded():
    assert "longer than the 600 s" in error("", EXPECT + "s>c [.] after @a within 1000s\n")
    timed = EXPECT + "@b c>s [.] ack 1, after @a within 1s\n"
    assert "expected a factor" in error("", timed + "s>c [.] after @b within 1-nanx\n")
    assert "expected a factor" in error("", timed + "s>c [.] after @b within 1-9999x\n")


@pytest.mark.parametrize("head,needle", [
    ("conditions: drop c>s first 200000\n", "drop 200000 packets, more than 100"),
    ("conditions: drop c>s first " + "9" * 15 + "\n", "unknown condition"),
    ("conditions: drop c>s first 60; drop s>c first 60\n", "drop 120 packets, more than 100"),
    ("client: python\nscript: recv 1000000000000000\n", "recv takes a number 0..16384"),
    ("client: scapy\nscript: connect; rst 99999999999\n", "rst takes a number"),
    ("counters: retransmissions == " + "9" * 40 + "\n", "expected 'NAME OP N'"),
    ("clients: 50\n", "expected a number of clients 1..8"),
])
def test_counts_are_bounded(head, needle):
    assert needle in error(head)


def test_payloads_are_bounded():
    big = "x" * (16 * 1024 + 1)
    assert "more than the 16384" in error(f'stdin: "{big}"\n')
    assert "more than the 16384" in error(f'script: send "{big}"\n')
    half = "y" * (9 * 1024)
    assert "the script sends 18432 bytes, more than the 16384" in \
        error(f'script: send "{half}"; send "{half}"\n')
    escaped = "\\x41" * 17000
    assert "more than the 16384" in error("", EXPECT + f's>c [P.] payload "{escaped}"\n')
    assert "more than 200" in error("script: " + "; ".join(['send "a"'] * 201) + "\n")


def test_a_long_after_field_is_refused_at_once():
    """The finding: the 'after' regex took 8 s on a 64 KB line.  Now the field is bounded and
    parsed without backtracking."""
    msg = error("", EXPECT + "s>c [.] after @a within " + "1" * 60000 + "\n")
    assert msg.startswith("t.scn:5: field 'after': ") and "characters" in msg, msg[:200]


def test_line_and_file_size_are_bounded(tmp_path):
    msg = error("lesson: " + "x" * (MAX_LINE_CHARS + 1) + "\n")
    assert msg.startswith("t.scn:2: line of ") and "characters" in msg
    big = tmp_path / "big.scn"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1) + "responder: --app hello\n"
                   "expect:\nc>s [S] seq 0\n")
    with pytest.raises(ScenarioError, match="larger than 256 KB"):
        load_scenario(big)


def test_a_scenario_must_be_a_regular_file(tmp_path):
    """``--scenario /dev/zero`` is refused at once (it used to be read forever); the child has
    a generous time limit only so that the old behaviour fails the test instead of hanging it."""
    code = ("from harness.judge.scenario import load_scenario, ScenarioError\n"
            "try:\n    load_scenario('/dev/zero')\n"
            "except ScenarioError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.strip() == "/dev/zero: not a regular file (a scenario is a text file, " \
                                 "e.g. scenarios/hello.scn)", res.stdout + res.stderr
    import os
    fifo = tmp_path / "pipe.scn"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario(fifo)
    with pytest.raises(ScenarioError, match="is a directory|not a regular file"):
        load_scenario(tmp_path)
    (tmp_path / "bin.scn").write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(tmp_path / "bin.scn")
