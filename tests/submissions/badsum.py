"""badsum.py -- a copy-and-swap responder (the lecture's naive one, in Python) with a classic
checksum bug: the TCP checksum covers the pseudo-header and the TCP header, but not the
payload.  Its SYN+ACK (no payload) is right; every line it sends has a wrong checksum, so the
client's kernel drops them.  Written for tcplab's grading tests: "the checksum named"."""

import socket
import struct

PORT, ISN = 80, 0xAAAABBBB
LINES = (b"Hello TCP\n\0", b"Great to meet you!\n\0",
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def answer(sock, pkt, seq, ack, flags, payload=b""):
    ihl = (pkt[0] & 15) * 4
    hdr = ihl + (pkt[ihl + 12] >> 4) * 4
    out = bytearray(pkt[:hdr]) + payload
    out[12:16], out[16:20] = pkt[16:20], pkt[12:16]
    out[ihl:ihl + 2], out[ihl + 2:ihl + 4] = pkt[ihl + 2:ihl + 4], pkt[ihl:ihl + 2]
    struct.pack_into("!II", out, ihl + 4, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
    out[ihl + 13] = flags
    struct.pack_into("!H", out, 2, len(out))
    struct.pack_into("!H", out, 10, 0)
    struct.pack_into("!H", out, 10, csum(bytes(out[:ihl])))
    struct.pack_into("!H", out, ihl + 16, 0)
    header_only = bytes(out[ihl:hdr])                      # the bug: the payload is left out
    pseudo = bytes(out[12:20]) + struct.pack("!BBH", 0, 6, len(header_only))
    struct.pack_into("!H", out, ihl + 16, csum(pseudo + header_only))
    sock.sendto(bytes(out), (socket.inet_ntoa(bytes(out[16:20])), 0))


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    served = set()
    while True:
        pkt = sock.recv(65535)
        ihl = (pkt[0] & 15) * 4
        sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", pkt, ihl)
        payload = pkt[ihl + (off >> 4) * 4:]
        if dport != PORT or flags & 0x04:
            continue
        if flags & 0x02 and not flags & 0x10:
            answer(sock, pkt, ISN, seq + 1, 0x12)
        elif flags & 0x11 == 0x11:
            answer(sock, pkt, ack, seq + len(payload) + 1, 0x10)
        elif flags & 0x10 and not payload and ack == ISN + 1 and (pkt[12:16], sport) not in served:
            served.add((pkt[12:16], sport))
            for line in LINES:
                answer(sock, pkt, ack, seq, 0x10, line)
                ack += len(line)


main()
