"""responder.packet's BPF program (``--rx packet``), through a small interpreter of the classic
BPF instructions it uses, against crafted IPv4 packets (attaching it for real needs
CAP_NET_RAW and a lab: tests/e2e/test_quiet_kernel.py)."""

from __future__ import annotations

import struct

from responder import packet, wire
from responder.wire import SYN, Segment, TcpOptions


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


def test_attach_filter_hands_the_kernel_a_working_program():
    """attach_filter passes the program by address (an array's buffer, no ctypes): on a plain
    UDP socket (no privilege needed) a drop-all program keeps a datagram out and an accept-all
    one lets the next in, so the kernel read the instructions we wrote."""
    import socket
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        packet.attach_filter(rx, packet.DROP_ALL)
        tx.sendto(b"dropped", rx.getsockname())
        packet.attach_filter(rx, [(packet.BPF_RET_K, 0, 0, 0x40000)])
        tx.sendto(b"kept", rx.getsockname())
        rx.settimeout(5)
        assert rx.recv(100) == b"kept"
        rx.setblocking(False)
        packet.discard_queued(rx)                   # nothing else was queued
    finally:
        rx.close()
        tx.close()
