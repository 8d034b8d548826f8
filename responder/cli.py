"""The responder's command line: one parser, used by ``python3 -m responder`` and by the harness
(which validates a scenario's ``responder:`` line with it instead of re-parsing it by hand)."""

from __future__ import annotations

import argparse
import sys
import textwrap

from .contract import CLASSIC_ISN, DEFAULT_MARK, DEFAULT_USER, FAULTS

EPILOG = """\
faults (--fault, for testing the harness; the demo must then fail naming the field):
  bad-checksum  the TCP checksum of every data segment is corrupted
  wrong-seq     the second data segment of each connection has its seq one too high
  no-delayed-ack    every segment is ACKed at once (no delayed ACK)
  no-backoff        the RTO is not doubled after a timeout (RFC 6298 5.5 ignored)
  no-challenge-ack  no RFC 5961 challenge ACKs (in-window RST/SYN are dropped silently)
  tarpit-window     a zero-window SYN,ACK advertises 1024 instead (the tarpit holds nobody)
  no-time-wait      the TCB is deleted where TIME-WAIT should begin (no last ACK either)

output on stderr: 'listening on ADDR:PORT app=NAME' once the sockets are open; one line per
state transition ('192.168.56.100:80 <> 192.168.56.1:62438 SYN-RECEIVED => ESTABLISHED');
one JSON line of counters on SIGUSR1 and at exit: segments_in, segments_out, drops (by reason:
the wire layer's names such as bad_checksum, truncated, and the state machine's such as
out_of_window, paws, bad_ack, rst_in_window, syn_queue_overflow, closed_port, listen_ack),
connections_open, connections_total, established_total, half_open, retransmissions,
challenge_acks, resets_sent, resets_received, syn_cookies_accepted, stateless_replies,
packets_ignored, send_errors, internal_errors (+ the app's own counters, named above).
SIGTERM exits 0.  Exit 2 without CAP_NET_RAW.  After opening its sockets it becomes --user
(nobody) with no groups, no capabilities and no_new_privs, or exits 2 if it cannot.  --connect opens from the --listen address:port, so the same RST rule covers it.
Needs the lab's rule dropping unmarked RSTs from the port, e.g.
  iptables -A OUTPUT -p tcp --sport 80 --tcp-flags RST RST -m mark ! --mark 0x5e -j DROP
"""


def _int(text: str) -> int:
    return int(text, 0)


def _addr_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}")
    import socket
    try:
        socket.inet_aton(host)
    except OSError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {host!r}") from None
    return text


def apps_help() -> str:
    """The ``apps:`` section of ``--help``, from the apps' registry (name and text together)."""
    from .apps import REGISTRY
    lines = ["apps:"]
    for info in REGISTRY.values():
        lines.append(textwrap.fill(info.help, width=98, initial_indent=f"  {info.name:7} ",
                                   subsequent_indent=" " * 10, break_on_hyphens=False))
    return "\n".join(lines) + "\n\n"


def build_parser() -> argparse.ArgumentParser:
    from .apps import REGISTRY
    p = argparse.ArgumentParser(
        prog="python3 -m responder",
        description="A raw-socket TCP responder for teaching TCP at the packet level "
                    "(RFC 9293 state machine, standard library only).",
        epilog=apps_help() + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, type=_addr_port, metavar="ADDR:PORT",
                   help="address and port to answer on, e.g. 192.168.56.100:80")
    p.add_argument("--app", required=True, choices=tuple(REGISTRY),
                   help="what to say (see below)")
    p.add_argument("--classic", action="store_true",
                   help="run the lecture's copy-and-swap program instead of the state machine "
                        "(byte for byte, bugs included; IPPROTO_RAW socket); it always says the "
                        "lecture's three lines, whatever --app says")
    p.add_argument("--isn", type=_int, metavar="N",
                   help="fixed initial sequence number (decimal or 0x..); default: RFC 6528 "
                        f"keyed hash + 4 us clock (classic: {CLASSIC_ISN:#x})")
    p.add_argument("--mark", type=_int, default=DEFAULT_MARK, metavar="N",
                   help="SO_MARK on every socket we send with (default 0x5e: the lab's RST "
                        "rule lets only marked RSTs through)")
    p.add_argument("--nodelay", action="store_true",
                   help="disable Nagle's algorithm (RFC 896) for all connections; the hello "
                        "and http apps disable it on their own connections anyway")
    p.add_argument("--connect", type=_addr_port, metavar="HOST:PORT",
                   help="also open a connection actively from the --listen address:port to "
                        "HOST:PORT and run the app on it")
    p.add_argument("--msl2", type=float, default=2.0, metavar="SECONDS",
                   help="TIME-WAIT duration, 2 MSL (default 2 s for a lab; RFC 9293: 4 min)")
    p.add_argument("--http-file", metavar="PATH",
                   help="page served by --app http (default: a built-in page)")
    p.add_argument("--user", default=DEFAULT_USER, metavar="NAME",
                   help="who to become once the raw sockets are open, when started as root "
                        "(default: nobody; never root); started as another user with "
                        "CAP_NET_RAW, the responder stays that user and drops the capability")
    p.add_argument("--rx", choices=("socket", "packet"), default="socket",
                   help="socket: receive on the raw socket, after netfilter (default); packet: "
                        "on an AF_PACKET socket, before netfilter, so the lab may drop the "
                        "port's segments in raw PREROUTING and spare the kernel's TCP and its "
                        "RSTs (for load; INPUT-chain drop conditions of lessons do not apply "
                        "to it: see responder/packet.py)")
    p.add_argument("--fault", choices=FAULTS, metavar="NAME",
                   help="deliberate fault for harness tests: " + ", ".join(FAULTS))
    p.add_argument("--table", action="store_true",
                   help="print the state machine table (state, event, action, RFC) and exit")
    return p


def cli(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--table" in argv:
        from .tcp import describe_table
        print(describe_table())
        return 0
    opts = build_parser().parse_args(argv)
    from .io import main
    return main(opts)

