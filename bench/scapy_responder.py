"""The simplest *fast* Scapy responder: the reference a student would write.

One reused ``L3RawSocket`` (an ``AF_PACKET`` socket to sniff on, an ``IPPROTO_RAW`` one to
send), ``sniff(opened_socket=..., prn=answer)``, and a stateless answer built with Scapy per
packet -- the lecture's program in Scapy, made to close properly:

* SYN -> SYN,ACK (ISN fixed, MSS 1460)
* the handshake's ACK (ack = ISN+1, no data) -> the three hello lines as three segments, then FIN
* FIN -> ACK
* anything else (the client's ACKs of our data) -> nothing

It sends unmarked packets, so the VM kernel's RSTs for its port must be dropped by a rule of
its own (the benchmark adds ``iptables -I OUTPUT -p tcp --sport PORT --tcp-flags RST RST -j
DROP`` in the VM namespace and removes it afterwards).  Needs Scapy (the project's venv)::

    python -m bench.scapy_responder --listen 192.168.56.100:8081 --iface eth1

``listening on ...`` on stderr when the socket is open; SIGTERM exits 0 with one JSON line of
counters; stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

ISN = 0x5C4A9000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scapy_responder")
    p.add_argument("--listen", required=True, metavar="ADDR:PORT")
    p.add_argument("--iface", default="eth1")
    p.add_argument("--max-seconds", type=float, default=300.0)
    args = p.parse_args(argv)
    addr, _, port = args.listen.rpartition(":")
    port = int(port)

    from scapy.config import conf
    from scapy.sendrecv import sniff
    from scapy.supersocket import L3RawSocket

    conf.verb = 0
    sock = L3RawSocket(iface=args.iface)
    counters = {"in": 0, "out": 0, "syn": 0, "hello": 0, "fin": 0}

    def send(pkt):
        sock.send(pkt)
        counters["out"] += 1

    def stop(signum, frame):
        raise KeyboardInterrupt     # sniff() returns on it
    signal.signal(signal.SIGTERM, stop)

    def started():
        print(f"listening on {addr}:{port} server=scapy", file=sys.stderr, flush=True)

    sniff(opened_socket=sock, prn=answerer(addr, port, send, counters), store=False,
          timeout=args.max_seconds, started_callback=started)
    sock.close()
    print(json.dumps(counters), file=sys.stderr, flush=True)
    return 0


def answerer(addr: str, port: int, send, counters: dict):
    """The stateless answer to each sniffed packet for ``addr:port`` (the module's list),
    sent with ``send(pkt)``, counted in ``counters``."""
    from scapy.layers.inet import IP, TCP

    from .payloads import HELLO_LINES

    def answer(pkt):
        if TCP not in pkt or pkt[IP].dst != addr or pkt[TCP].dport != port:
            return
        counters["in"] += 1
        ip, tcp = pkt[IP], pkt[TCP]
        flags = tcp.flags
        back = IP(src=addr, dst=ip.src)
        if flags.S and not flags.A:
            counters["syn"] += 1
            send(back / TCP(sport=port, dport=tcp.sport, flags="SA", seq=ISN, ack=tcp.seq + 1,
                            window=65535, options=[("MSS", 1460)]))
        elif flags.F:
            counters["fin"] += 1
            send(back / TCP(sport=port, dport=tcp.sport, flags="A", seq=tcp.ack,
                            ack=tcp.seq + len(tcp.payload) + 1, window=65535))
        elif flags.A and tcp.ack == ISN + 1 and not len(tcp.payload):
            counters["hello"] += 1
            seq = ISN + 1
            for line in HELLO_LINES:
                send(back / TCP(sport=port, dport=tcp.sport, flags="PA", seq=seq, ack=tcp.seq,
                                window=65535) / line)
                seq += len(line)
            send(back / TCP(sport=port, dport=tcp.sport, flags="FA", seq=seq, ack=tcp.seq,
                            window=65535))
    return answer


if __name__ == "__main__":
    sys.exit(main())
