"""The I/O layer without a network: CLI, faults, early filter, exit codes, counters."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from responder import io, wire
from responder.cli import build_parser, cli
from responder.wire import ACK, PSH, Segment

ROOT = Path(__file__).resolve().parents[2]


def opts(*extra):
    return build_parser().parse_args(["--listen", "192.168.56.100:80", "--app", "hello", *extra])


def test_cli_defaults_and_numbers():
    o = opts("--isn", "0xaaaabbbb", "--mark", "0x5f", "--msl2", "0.5")
    assert o.isn == 0xAAAABBBB and o.mark == 0x5F and o.msl2 == 0.5
    assert opts().mark == 0x5E and opts().msl2 == 2.0 and opts().isn is None


@pytest.mark.parametrize("bad", ["192.168.56.100", "host:80", "1.2.3.4:0", "1.2.3.4:x"])
def test_cli_rejects_bad_listen(bad):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--listen", bad, "--app", "hello"])


def test_help_runs_with_system_python_stdlib_only():
    r = subprocess.run(["/usr/bin/python3", "-S", "-E", "-m", "responder", "--help"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--fault" in r.stdout and "tarpit" in r.stdout


def test_table_prints(capsys):
    assert cli(["--table"]) == 0
    assert "SYN-RECEIVED" in capsys.readouterr().out


def test_no_permission_exits_2_with_one_line(monkeypatch, capsys):
    def deny(*a, **k):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(socket, "socket", deny)
    assert io.main(opts()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CAP_NET_RAW" in err[0]


def seg(payload=b"abc", seq=100):
    return Segment(wire.ip_bytes("192.168.56.100"), wire.ip_bytes("192.168.56.1"), 80, 5555,
                   seq, 1, ACK | PSH, 100, payload=payload)


def test_fault_wrong_seq_shifts_second_data_segment_only():
    f = io.Faults("wrong-seq")
    assert f.before(seg(seq=1)).seq == 1
    assert f.before(seg(payload=b"")).seq == 100          # not a data segment
    assert f.before(seg(seq=12)).seq == 13
    assert f.before(seg(seq=32)).seq == 32


def test_fault_bad_checksum_only_on_data():
    f = io.Faults("bad-checksum")
    good = wire.build_tcp(seg())
    bad = f.after(seg(), good)
    assert bad != good and bad[:16] == good[:16]
    assert f.after(seg(payload=b""), good) is good
    with pytest.raises(ValueError):
        io.Faults("nonsense")


class FakeStack:
    def __init__(self):
        self.got = []

    def on_segment(self, s, now):
        self.got.append(s)
        return []

    def stats(self):
        return {"segments_in": len(self.got), "segments_out": 0, "drops": {"rst": 1}}


def make_responder():
    r = io.Responder(opts(), clock=lambda: 5.0, random=lambda n: b"\0" * n)
    r.stack = FakeStack()
    r.rbuf = bytearray(65536)
    r.rview = memoryview(r.rbuf)
    return r


def feed(r, pkt):
    r.rbuf[:len(pkt)] = pkt
    r.handle_packet(len(pkt))


def test_early_filter_and_wire_drops_counted():
    r = make_responder()
    s = Segment(wire.ip_bytes("192.168.56.1"), wire.ip_bytes("192.168.56.100"), 5555, 80, 1, 0,
                ACK, 100)
    feed(r, wire.build_packet(s))
    assert len(r.stack.got) == 1
    other = Segment(s.src, s.dst, 5555, 22, 1, 0, ACK, 100)
    feed(r, wire.build_packet(other))
    assert r.counters["packets_ignored"] == 1
    broken = bytearray(wire.build_packet(s))
    broken[-1] ^= 0xFF                                    # TCP checksum now wrong
    feed(r, broken)
    feed(r, b"\x45\x00")
    st = r.stats()
    assert st["drops"]["bad_checksum"] == 1 and st["drops"]["rst"] == 1
    assert st["drops"]["truncated"] == 1
    json.dumps(st)


def test_garbage_never_raises():
    r = make_responder()
    r.stack = io.Stack(io.Config(), isn_key=b"x")
    import random
    rnd = random.Random(1)
    for _ in range(2000):
        n = rnd.randrange(0, 80)
        pkt = bytearray(rnd.randbytes(n))
        if n >= 20:
            pkt[0] = 0x45
            pkt[16:20] = wire.ip_bytes("192.168.56.100")
        r._guard(lambda: feed(r, pkt))
    assert r.counters["internal_errors"] == 0


def test_responder_exits_2_as_unprivileged_user():
    if subprocess.run(["id", "-u", "nobody"], capture_output=True).returncode:
        pytest.skip("no nobody user")
    # A copy of the package in a directory 'nobody' can read, as it is deployed into a VM: the
    # checkout itself may be a mode-700 temporary clone that 'nobody' cannot import from.
    import shutil
    import tempfile
    where = tempfile.mkdtemp(prefix="tcplab-nobody-")
    try:
        os.chmod(where, 0o755)
        shutil.copytree(ROOT / "responder", os.path.join(where, "responder"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            "/usr/bin/python3", "-m", "responder", "--listen",
                            "192.168.56.100:80", "--app", "hello"], cwd=where,
                           capture_output=True, text=True)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    if r.returncode != 2 and "setpriv" in r.stderr:
        pytest.skip(r.stderr)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1


def test_stdlib_only_imports():
    code = ("import sys, responder.io, responder.__main__; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('hypothesis','pytest','scapy')]; "
            "print(bad)")
    r = subprocess.run(["/usr/bin/python3", "-S", "-E", "-c", code], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.stdout.strip() == "[]", r.stderr


def _responder_in_empty_netns(*args):
    """The real responder, as root, in a new empty network namespace (``unshare -n``): nothing
    can reach it and it reaches nothing, but its sockets, signals and output are real."""
    import os
    import shutil
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    return subprocess.Popen(["unshare", "-n", "/usr/bin/python3", "-m", "responder",
                             "--listen", "192.168.56.100:80", "--app", "hello", *args],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)


def test_process_contract_listening_line_sigusr1_sigterm():
    import signal
    import time
    proc = _responder_in_empty_netns()
    try:
        lines = []
        deadline = time.monotonic() + 10
        while not any(l.startswith("listening on") for l in lines):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stderr.readline().rstrip("\n"))
        assert "listening on 192.168.56.100:80 app=hello" in lines
        assert "capabilities dropped" in lines
        status = open(f"/proc/{proc.pid}/status").read()
        # the child of unshare is the responder; unshare execs, so the pid is the same
        assert "CapEff:\t0000000000000000" in status, status
        proc.send_signal(signal.SIGUSR1)
        counters = json.loads(proc.stderr.readline())
        assert {"segments_in", "segments_out", "drops", "connections_open",
                "connections_total", "retransmissions", "challenge_acks"} <= set(counters)
        assert proc.poll() is None                         # SIGUSR1 does not stop it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        rest = proc.stderr.read().strip().splitlines()
        assert json.loads(rest[-1])["segments_out"] == 0  # the exit line
    finally:
        if proc.poll() is None:
            proc.kill()


def test_receive_errors_are_counted_not_fatal():
    r = make_responder()

    class Sock:
        calls = 0

        def recv_into(self, buf):
            Sock.calls += 1
            if Sock.calls == 1:
                raise OSError(105, "No buffer space available")
            raise BlockingIOError
    r.rx = Sock()
    r._drain()
    assert r.counters["recv_errors"] == 1


def test_classic_wiring_reproduces_the_lecture_synack_on_the_raw_path():
    from responder import lecture
    r = io.Responder(opts("--classic"), clock=lambda: 5.0)
    r.rbuf = bytearray(65536)
    r.rview = memoryview(r.rbuf)
    sent = []

    class Raw:
        def sendto(self, pkt, addr):
            sent.append((bytes(pkt), addr))
    r.tx_raw = Raw()
    feed(r, lecture.SYN)
    assert sent == [(lecture.SYNACK, ("192.168.56.1", 0))]       # byte for byte
    st = r.stats()
    assert st["segments_in"] == 1 and st["segments_out"] == 1
