"""Each responder app end to end on a real netns lab against the real Linux client: nc for
hello and tarpit, a Python socket client for echo and http, and an active open (--connect) to a
host-side `nc -l`.  The responder and the Linux kernel must agree: Wireshark's TCP analysis
(via pyshark) flags no retransmission, out-of-order or lost segment on a clean run, and every
checksum the responder builds is correct."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import provisioned_lab

pytestmark = pytest.mark.e2e

PORT = 80
TROUBLE = {"retransmission", "fast_retransmission", "spurious_retransmission", "out_of_order",
           "lost_segment", "ack_lost_segment", "duplicate_ack"}
HELLO = (b"Hello TCP\n\0Great to meet you!\n\0"
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")


@pytest.fixture(scope="module")
def applab():
    """One provisioned lab for all app tests of this module (removed at the end)."""
    with provisioned_lab("app") as lab:
        yield lab


@contextlib.contextmanager
def responder(lab, app, *extra):
    """Run the responder in the VM for the block; yields a dict that gets its exit status,
    stderr and exit counters."""
    from harness.stress.attack import Target
    from harness.run.responder import responder_counters
    out = {}
    t = Target(lab, app, *extra)
    with t:
        yield out
    out["status"], out["stderr"] = t.exit_status, t.proc.stderr
    out["counters"] = responder_counters(t.proc.stderr)


@contextlib.contextmanager
def captured(lab, path):
    """Capture on the host side for the block; yields a list filled with the packets."""
    from harness.run.capture import Capture
    from harness.run.responder import CANARY_PORT, canary
    from harness.judge.dissect import read_pcap
    cap = Capture(lab.host_exec_prefix(), lab.capture_interface, path,
                  f"tcp port {PORT} or tcp port 9000 or udp port {CANARY_PORT}",
                  canary=canary(lab))
    packets: list = []
    cap.start()
    try:
        yield packets
    finally:
        cap.stop()
    packets.extend(read_pcap(path, display_filter="tcp"))


def host_python(lab, code: str, timeout: float = 60) -> dict:
    """Run a Python client on the host side; it prints one JSON line."""
    res = subprocess.run(lab.host_exec_prefix() + [sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def assert_clean(packets, lab):
    assert packets, "nothing captured"
    from_responder = [p for p in packets if p.src == lab.vm_ip]
    assert from_responder, "the responder sent nothing"
    bad = [(p.number, p.tcpdump_line()) for p in from_responder if not p.tcp_checksum_ok]
    assert not bad, f"responder packets with a wrong checksum: {bad}"
    flagged = [(p.number, sorted(p.analysis & TROUBLE)) for p in packets if p.analysis & TROUBLE]
    assert not flagged, f"Wireshark's TCP analysis flags trouble: {flagged}"


def test_hello_with_nc(applab, tmp_path):
    with responder(applab, "hello") as r, captured(applab, tmp_path / "c.pcapng") as pk:
        res = subprocess.run(applab.host_exec_prefix() + ["nc", applab.vm_ip, str(PORT)],
                             input=b"some client data\n", capture_output=True, timeout=30)
    assert res.stdout == HELLO
    assert_clean(pk, applab)
    # the client's 17 bytes were ACKed: the responder's final ACK covers data + FIN
    last = [p for p in pk if p.src == applab.vm_ip][-1]
    assert last.ack == 1 + 17 + 1, last.tcpdump_line()
    assert r["status"] == 0 and r["counters"]["established_total"] == 1


def test_echo_with_a_python_client(applab, tmp_path):
    """200 KB through the echo app: many full-size segments both ways, flow control, close."""
    with responder(applab, "echo") as r, captured(applab, tmp_path / "c.pcapng") as pk:
        got = host_python(applab, f"""
            import hashlib, json, socket, threading
            data = bytes((i * 7 + i // 251) % 256 for i in range(200_000))
            s = socket.create_connection(("{applab.vm_ip}", {PORT}), timeout=20)
            def writer():
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=writer); t.start()
            back = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                back += chunk
            t.join(); s.close()
            print(json.dumps({{"sent": hashlib.sha256(data).hexdigest(),
                              "back": hashlib.sha256(back).hexdigest(), "n": len(back)}}))
        """)
    assert got["n"] == 200_000 and got["back"] == got["sent"]
    assert_clean(pk, applab)
    states = r["stderr"]
    assert "ESTABLISHED => CLOSE-WAIT" in states and "LAST-ACK => CLOSED" in states, states
    assert r["counters"]["retransmissions"] == 0


def test_http_miniweb_with_a_python_client(applab, tmp_path):
    """A GET answered by precomputed packets: the page arrives intact, twice (two connections
    reuse the same templates, patched), with correct checksums."""
    from harness.run.ssh import LabSSH
    page = f"{applab.responder_dir()}/test-page.html"
    with LabSSH(applab.ssh_endpoint()) as ssh:
        ssh.run(f"/usr/bin/python3 -c \"open('{page}','w').write("
                f"'<html>' + ''.join('<p>line %d</p>' % i for i in range(3000)) + '</html>')\"")
    expected = "<html>" + "".join(f"<p>line {i}</p>" for i in range(3000)) + "</html>"
    with responder(applab, "http", "--http-file", page) as r, \
            captured(applab, tmp_path / "c.pcapng") as pk:
        got = host_python(applab, f"""
            import http.client, json
            out = []
            for _ in range(2):
                c = http.client.HTTPConnection("{applab.vm_ip}", {PORT}, timeout=20)
                c.request("GET", "/")
                resp = c.getresponse()
                out.append([resp.status, resp.read().decode()])
                c.close()
            print(json.dumps(out))
        """)
    for status, body in got:
        assert status == 200 and body == expected
    assert_clean(pk, applab)
    assert r["counters"].get("http_packets_patched", 0) > 2


def test_tarpit_holds_nc_with_a_zero_window_and_no_state(applab, tmp_path):
    with responder(applab, "tarpit") as r, captured(applab, tmp_path / "c.pcapng") as pk:
        res = subprocess.run(applab.host_exec_prefix() + ["timeout", "4", "nc", applab.vm_ip,
                             str(PORT)], input=b"x" * 2000, capture_output=True, timeout=30)
    assert res.returncode == 124, "nc was not held: it finished before the timeout"
    synack = [p for p in pk if p.src == applab.vm_ip and p.flags_str == "S."]
    assert synack and synack[0].window == 0
    probes_answered = [p for p in pk if p.src == applab.vm_ip and p.flags_str == "."
                       and p.window == 0]
    assert probes_answered, "no zero-window answers to the client's probes"
    assert "zero_window" in set().union(*(p.analysis for p in pk if p.src == applab.vm_ip))
    c = r["counters"]
    assert c["tarpit_held"] >= 1 and c["connections_open"] == 0, c


def test_active_open_to_a_host_side_listener(applab, tmp_path):
    """--connect: the responder opens (CLOSED => SYN-SENT => ESTABLISHED) to `nc -l`."""
    listener = subprocess.Popen(applab.host_exec_prefix() + ["nc", "-l", applab.host_ip,
                                "9000"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # capture first: the responder opens its connection as soon as it starts
        with captured(applab, tmp_path / "c.pcapng") as pk, \
                responder(applab, "hello", "--connect", f"{applab.host_ip}:9000") as r:
            out, err = listener.communicate(timeout=30)
    finally:
        listener.kill()
    assert out == HELLO, err
    assert "SYN-SENT => ESTABLISHED" in r["stderr"], r["stderr"]
    syn = [p for p in pk if p.src == applab.vm_ip and p.flags_str == "S"]
    assert syn and syn[0].dport == 9000
    assert_clean(pk, applab)
