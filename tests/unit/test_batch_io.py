"""responder.batch (recvmmsg/sendmmsg through ctypes) and responder.packet's BPF program.

The batch is exercised on UDP sockets on loopback (the calls are the same for the raw socket);
the BPF program through a small interpreter of the classic BPF instructions it uses, against
crafted IPv4 packets (attaching it for real needs CAP_NET_RAW and a lab: the e2e tests)."""

from __future__ import annotations

import socket
import struct

import pytest

from responder import batch, packet, wire
from responder.wire import SYN, Segment, TcpOptions

pytest.importorskip("ctypes")


def _udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    return a, b


def test_batch_sends_in_order_and_receives_many_per_call():
    a, b = _udp_pair()
    try:
        bt = batch.open_batch(a, b, slots=8)
        assert bt is not None
        assert bt.recv() == []                       # nothing waiting: EAGAIN, not an error
        dest = a.getsockname()
        for i in range(5):
            bt.sendto(bytes([i]) * (10 + i), dest)
        assert bt.queued == 5 and bt.flush() == 5 and bt.queued == 0
        got = bt.recv()
        assert [bytes(v) for v, _n in got] == [bytes([i]) * (10 + i) for i in range(5)]
        assert [n for _v, n in got] == [10, 11, 12, 13, 14]
        assert bt.calls == {"recvmmsg": 2, "sendmmsg": 1}
        for i in range(20):                          # more than a batch: flushed as it fills
            bt.sendto(b"x%d" % i, dest)
        bt.flush()
        first = [bytes(v) for v, _n in bt.recv()]   # views: valid until the next recv()
        second = [bytes(v) for v, _n in bt.recv()]
        assert first == [b"x%d" % i for i in range(8)]
        assert second == [b"x%d" % i for i in range(8, 16)]
    finally:
        a.close()
        b.close()


def test_a_refused_message_is_reported_and_the_rest_still_sent():
    a, b = _udp_pair()
    try:
        bt = batch.open_batch(a, b, slots=8)
        dest = a.getsockname()
        bt.sendto(b"one", dest)
        bt.sendto(b"\0" * 65536, dest)               # too big for UDP: EMSGSIZE
        bt.sendto(b"three", dest)
        errors = []
        assert bt.flush(errors.append) == 2
        assert len(errors) == 1 and isinstance(errors[0], OSError)
        assert [bytes(v) for v, _n in bt.recv()] == [b"one", b"three"]
        bt.sendto(b"\0" * 65536, dest)
        with pytest.raises(OSError):                 # without on_error: raised after the rest
            bt.flush()
        with pytest.raises(OSError):
            bt.sendto(b"\0" * (batch.SLOT_SIZE + 1), dest)
    finally:
        a.close()
        b.close()


def run_bpf(prog: list, pkt: bytes) -> int:
    """Classic BPF, the instructions tcp_filter uses; returns the accepted length (0: drop)."""
    A = X = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == packet.BPF_LD_B_ABS:
            A = pkt[k]
        elif code == packet.BPF_LD_H_ABS:
            A = struct.unpack_from("!H", pkt, k)[0]
        elif code == packet.BPF_LD_W_ABS:
            A = struct.unpack_from("!I", pkt, k)[0]
        elif code == packet.BPF_LDX_MSH:
            X = 4 * (pkt[k] & 0xF)
        elif code == packet.BPF_LD_H_IND:
            A = struct.unpack_from("!H", pkt, X + k)[0]
        elif code == packet.BPF_JEQ_K:
            pc += jt if A == k else jf
        elif code == packet.BPF_JSET_K:
            pc += jt if A & k else jf
        elif code == packet.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not emulated")


def _tcp(dst=b"\xc0\xa8\x38\x64", dport=80, frag=0, proto=6):
    seg = Segment(b"\xc0\xa8\x38\x01", dst, 40000, dport, 1, 0, SYN, 1000,
                  options=TcpOptions(mss=1460))
    pkt = bytearray(wire.build_packet(seg))
    pkt[9] = proto
    struct.pack_into("!H", pkt, 6, frag)
    return bytes(pkt)


def test_bpf_program_takes_only_tcp_to_the_listen_address_and_port():
    prog = packet.tcp_filter(b"\xc0\xa8\x38\x64", 80)
    assert run_bpf(prog, _tcp()) > 0
    assert run_bpf(prog, _tcp(frag=0x4000)) > 0                  # DF set: fine
    assert run_bpf(prog, _tcp(dport=22)) == 0                    # SSH to the VM
    assert run_bpf(prog, _tcp(dst=b"\xc0\xa8\x38\x01")) == 0     # to another address
    assert run_bpf(prog, _tcp(proto=17)) == 0                    # UDP (the capture canary)
    assert run_bpf(prog, _tcp(frag=0x0010)) == 0                 # a later fragment
    opts = bytearray(_tcp())                                     # IP options: IHL 6
    with_opts = bytes([0x46]) + bytes(opts[1:20]) + b"\x01\x01\x01\x00" + bytes(opts[20:])
    assert run_bpf(prog, with_opts) > 0
    assert run_bpf(packet.DROP_ALL, _tcp()) == 0
