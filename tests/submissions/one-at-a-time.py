"""one-at-a-time.py -- a responder that serves one client after the other, written for tcplab's
grading tests: the lab-4 lesson "two clients at once" must fail it, naming the second
connection.

For one connection it does what lab 4 asks: a SYN+ACK (no options, its own ISN), the three
lines, its own FIN as a segment of its own, and an ACK of the client's FIN.  But it keeps one
connection only: while that one is open (until the client's FIN) it ignores every SYN from
anyone else, as a program with one global "connection" and no table of them would.  The
second client's kernel sends its SYN again a second later; by then the first may be done."""

import socket
import struct

PORT, ISN = 80, 0x1000
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
LINES = (b"Hello TCP\n\0", b"Great to meet you!\n\0",
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def send(sock, src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    sock.sendto(ip + tcp, (socket.inet_ntoa(dst), 0))


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    peer = None                                  # (address, port) of the one connection
    while True:
        pkt = sock.recv(65535)
        ihl = (pkt[0] & 15) * 4
        sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", pkt, ihl)
        payload = pkt[ihl + (off >> 4) * 4:]
        src, dst = pkt[12:16], pkt[16:20]
        if dport != PORT:
            continue
        if peer is None and flags & SYN and not flags & ACK:
            peer = (src, sport)
            send(sock, dst, src, PORT, sport, ISN, seq + 1, SYN | ACK)
            continue
        if (src, sport) != peer:
            continue                             # busy: not now (a SYN is simply lost)
        if flags & RST:
            peer = None
        elif flags & FIN:
            end = ISN + 1 + sum(map(len, LINES)) + 1
            send(sock, dst, src, PORT, sport, end, seq + len(payload) + 1, ACK)
            peer = None                          # done: the next SYN may come
        elif flags & ACK and ack == ISN + 1 and not payload:
            nxt = ISN + 1
            for line in LINES:
                send(sock, dst, src, PORT, sport, nxt, seq, PSH | ACK, line)
                nxt += len(line)
            send(sock, dst, src, PORT, sport, nxt, seq, FIN | ACK)


main()
