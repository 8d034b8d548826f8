"""Receiving the lab port's segments on a packet socket, before the kernel's IP stack (``--rx
packet``); and the socket filter both receive paths use.

The default receive path is the ``AF_INET`` raw socket: the kernel delivers it a copy of each
TCP packet from ``ip_local_deliver``, i.e. *after* netfilter's PREROUTING and INPUT hooks, and
then hands the packet to its own TCP, which finds no socket on the lab port and answers with
an RST that the lab's rule drops.  An ``AF_PACKET`` socket is handed packets earlier, at the
device (``__netif_receive_skb``), before any netfilter hook, so the lab can tell the kernel to
drop the lab port's segments at once::

    iptables -t raw -A PREROUTING -d 192.168.56.100 -p tcp --dport 80 -j DROP

and the kernel then neither routes them, nor copies them to raw sockets, nor runs its TCP on
them, nor makes an RST to drop (see docs/bench.md for what that saves).  This module opens
that socket:

* ``AF_PACKET, SOCK_DGRAM, ETH_P_IP``: the data starts at the IP header, as on the raw socket;
* a classic BPF filter (``SO_ATTACH_FILTER``; the kernel takes a pointer to the program: an
  ``array``'s address) lets only IPv4 TCP to the listen address and port through, so the rest of the
  interface's traffic (SSH, the capture canary) costs the responder nothing; packets queued
  before the filter was attached are read and thrown away;
* ``PACKET_IGNORE_OUTGOING``: not our own packets (Linux >= 4.20).

The same filter (:func:`tcp_filter`) is attached to the default receive path, the raw socket,
too: a raw socket's data also starts at the IP header, and without it the kernel would queue
every TCP segment to this host for the responder to look at and throw away.

What ``--rx packet`` changes for lessons: INPUT-chain drops of the lab's ``drop c>s``
conditions act after a packet socket has its copy, so the responder would see packets those
lessons mean to lose; lessons keep the default ``--rx socket``.  Opened before the responder
drops its privileges (it needs CAP_NET_RAW, like the raw socket).
"""

from __future__ import annotations

import array
import socket
import struct

ETH_P_IP = 0x0800
SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
PACKET_IGNORE_OUTGOING = 23

# Classic BPF opcodes (linux/filter.h)
BPF_LD_B_ABS, BPF_LD_H_ABS, BPF_LD_W_ABS = 0x30, 0x28, 0x20   # A = P[k] (byte, half, word)
BPF_LDX_MSH = 0xB1              # X = 4 * (P[k] & 0xf): the IP header's length
BPF_LD_H_IND = 0x48             # A = P[X + k] (half word)
BPF_JEQ_K, BPF_JSET_K = 0x15, 0x45
BPF_RET_K = 0x06


def tcp_filter(addr: bytes, port: int) -> list:
    """The BPF program ``[(code, jt, jf, k)]``: TCP (the socket takes only IPv4), to ``addr``
    (4 bytes), not a later fragment, to ``port``: accept the packet, else drop.  A jump goes
    to the instruction ``jt``/``jf`` past the next one; every "no" lands on the last (drop)."""
    return [
        (BPF_LD_B_ABS, 0, 0, 9),                         # 0: A = protocol
        (BPF_JEQ_K, 0, 8, socket.IPPROTO_TCP),           # 1: not TCP -> 10
        (BPF_LD_W_ABS, 0, 0, 16),                        # 2: A = destination address
        (BPF_JEQ_K, 0, 6, int.from_bytes(addr, "big")),  # 3: not ours -> 10
        (BPF_LD_H_ABS, 0, 0, 6),                         # 4: A = flags + fragment offset
        (BPF_JSET_K, 4, 0, 0x1FFF),                      # 5: a later fragment -> 10
        (BPF_LDX_MSH, 0, 0, 0),                          # 6: X = IP header length
        (BPF_LD_H_IND, 0, 0, 2),                         # 7: A = TCP destination port
        (BPF_JEQ_K, 0, 1, port),                         # 8: not our port -> 10
        (BPF_RET_K, 0, 0, 0x40000),                      # 9: accept (up to 256 KiB)
        (BPF_RET_K, 0, 0, 0),                            # 10: drop
    ]


DROP_ALL = [(BPF_RET_K, 0, 0, 0)]


def attach_filter(sock: socket.socket, prog: list) -> None:
    """``SO_ATTACH_FILTER`` with a classic BPF program.  The kernel takes a ``struct
    sock_fprog``: the program's length and a *pointer* to its instructions; an ``array``'s
    ``buffer_info()`` gives that address (no ctypes, which costs ~30 ms to import on PyPy),
    and the array stays alive until the call has copied the program."""
    code = array.array("B", b"".join(struct.pack("=HBBI", *ins) for ins in prog))
    fprog = struct.pack("@HP", len(prog), code.buffer_info()[0])
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def discard_queued(sock: socket.socket) -> None:
    """Read and throw away what a non-blocking socket queued before its filter was attached
    (the filter applies only to packets that arrive after it)."""
    while True:
        try:
            sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return


def open_packet_rx(addr: bytes, port: int, rcvbuf: int) -> socket.socket:
    """The packet socket described in the module docstring (non-blocking)."""
    if not hasattr(socket, "AF_PACKET"):
        raise OSError("AF_PACKET sockets exist only on Linux")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        attach_filter(s, tcp_filter(addr, port))
        try:
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass                # older kernels: outgoing packets fail the filter's port test
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)      # SO_RCVBUFFORCE
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setblocking(False)
        discard_queued(s)
    except BaseException:
        s.close()
        raise
    return s
