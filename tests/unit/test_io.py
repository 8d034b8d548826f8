"""The I/O layer without a network: CLI, faults, early filter, exit codes, counters."""

import json
import os
import socket
import subprocess
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


@pytest.fixture
def public_copy():
    """A copy of the package in a directory 'nobody' can read, as it is deployed into a VM: the
    checkout itself may be a mode-700 temporary clone that 'nobody' cannot import from."""
    import shutil
    import tempfile
    if subprocess.run(["id", "-u", "nobody"], capture_output=True).returncode:
        pytest.skip("no nobody user")
    where = tempfile.mkdtemp(prefix="tcplab-nobody-")
    try:
        os.chmod(where, 0o755)
        shutil.copytree(ROOT / "responder", os.path.join(where, "responder"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_responder_exits_2_as_unprivileged_user(public_copy):
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "/usr/bin/python3", "-m", "responder", "--listen",
                        "192.168.56.100:80", "--app", "hello"], cwd=public_copy,
                       capture_output=True, text=True)
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


@pytest.fixture
def private_copy(tmp_path):
    """A copy of the package that only root can read (a mode-700 directory): once the
    responder has dropped to 'nobody' it cannot read its own sources, so anything it still
    imported lazily after the drop would fail here."""
    import shutil
    where = tmp_path / "private"
    where.mkdir(mode=0o700)
    shutil.copytree(ROOT / "responder", where / "responder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return where


def _responder_in_empty_netns(cwd, *args, prefix=()):
    """The real responder, as root, in a new empty network namespace (``unshare -n``): nothing
    can reach it and it reaches nothing, but its sockets, signals and output are real."""
    import shutil
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    return subprocess.Popen(["unshare", "-n", *prefix, "/usr/bin/python3", "-m", "responder",
                             "--listen", "192.168.56.100:80", "--app", "hello", *args],
                            cwd=cwd, stderr=subprocess.PIPE, text=True)


def _proc_status(pid) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _exit_and_stderr(proc) -> tuple:
    """Wait (at most 20 s) for a responder that should exit by itself: (exit code, lines)."""
    try:
        rc = proc.wait(timeout=20)
        return rc, proc.stderr.read().strip().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for_line(proc, prefix, lines):
    import time
    deadline = time.monotonic() + 10
    while not any(line.startswith(prefix) for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, lines
        lines.append(proc.stderr.readline().rstrip("\n"))


def test_process_contract_listening_line_sigusr1_sigterm(private_copy):
    """Started as root: once listening it is uid/gid 'nobody' with no groups, no capability
    and no_new_privs (issue 15 finding 1), and SIGUSR1/SIGTERM (sent by root) still work."""
    import pwd
    import signal
    nobody = pwd.getpwnam("nobody")
    proc = _responder_in_empty_netns(private_copy)
    try:
        lines = []
        _wait_for_line(proc, "listening on", lines)
        assert "listening on 192.168.56.100:80 app=hello" in lines
        assert f"privileges dropped: uid {nobody.pw_uid} gid {nobody.pw_gid} (nobody), no " \
               "groups, no capabilities, no_new_privs" in lines, lines
        # the child of unshare is the responder; unshare execs, so the pid is the same
        st = _proc_status(proc.pid)
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
        assert st["Groups"].strip() == "", st["Groups"]
        for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(st[field], 16) == 0, (field, st[field])
        assert st["NoNewPrivs"].strip() == "1"
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
            proc.wait()


def test_refuses_to_serve_as_root_when_it_cannot_leave_root(private_copy):
    """Root with CAP_NET_RAW but without CAP_SETUID/CAP_SETGID (a bounding set of net_raw
    only): the sockets open, the switch fails, and it exits 2 with one line instead of
    serving as root."""
    import shutil
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    rc, err = _exit_and_stderr(_responder_in_empty_netns(
        private_copy, prefix=["setpriv", "--inh-caps=-all", "--bounding-set=-all,+net_raw"]))
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith("responder: refusing to serve with privileges it cannot drop: "
                             "setgroups([]): Operation not permitted"), err


def test_non_root_with_net_raw_is_already_unprivileged_and_drops_the_capability(public_copy):
    """Started as 'nobody' with CAP_NET_RAW only (ambient, as setpriv gives it): it stays
    'nobody', says so, and keeps no capability once listening."""
    import shutil
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    proc = _responder_in_empty_netns(
        public_copy, prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       "--inh-caps=+net_raw", "--ambient-caps=+net_raw"])
    try:
        lines = []
        _wait_for_line(proc, "listening on", lines)
        assert "already unprivileged (uid 65534 gid 65534): capabilities dropped, " \
               "no_new_privs" in lines, lines
        st = _proc_status(proc.pid)
        assert st["Uid"].split() == ["65534"] * 4
        for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(st[field], 16) == 0, (field, st[field])
        assert st["NoNewPrivs"].strip() == "1"
    finally:
        proc.kill()
        proc.wait()


def test_user_option_never_root_and_unknown_users_named():
    from responder.privileges import PrivilegeError, resolve_user
    with pytest.raises(PrivilegeError, match="must not keep uid or gid 0"):
        resolve_user("root")
    with pytest.raises(PrivilegeError, match="must not keep uid or gid 0"):
        resolve_user("0")
    with pytest.raises(PrivilegeError, match="no user 'no-such-user-tcplab'"):
        resolve_user("no-such-user-tcplab")
    assert opts().user == "nobody" and opts("--user", "daemon").user == "daemon"


def test_bad_user_refused_with_one_line(private_copy):
    rc, err = _exit_and_stderr(_responder_in_empty_netns(private_copy, "--user", "root"))
    assert rc == 2 and len(err) == 1 and "must not keep uid or gid 0" in err[0], (rc, err)


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
