"""One connection of a capture, and how a packet is compared with an expect line.

:class:`Conv` is the packets of one connection (the lab's client address and a client port,
the responder's address and port) with the look-ups that ``echo``/``latest`` need;
:func:`client_ports` finds the connections of a capture in the order their SYNs came;
:func:`renumber` counts every connection's relative numbers from its own two ISNs;
:func:`check_fields` lists every way a packet differs from a line (``expected X, got Y``).
:mod:`harness.judge.match` builds the verdict from these.
"""

from __future__ import annotations

from dataclasses import replace

from harness.judge.dissect import ACK, SYN, Pkt, format_options
from harness.judge.scenario import Expect, OptionsSpec, Val, c_escape

# Wireshark analysis flags that betray a responder bug unless a line states them.
SERVER_BAD_ANALYSIS = frozenset({"retransmission", "fast_retransmission",
                                 "spurious_retransmission", "out_of_order", "lost_segment",
                                 "ack_lost_segment"})




def seq_lt(a: int, b: int) -> bool:
    """a < b in 32-bit sequence space (RFC 1982 style)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def _client_port(p: Pkt, client_ip: str, server_ip: str, server_port: int) -> int | None:
    """The client port of ``p`` if it belongs to a client<->responder connection, else None."""
    if (p.src, p.dst, p.dport) == (client_ip, server_ip, server_port):
        return p.sport
    if (p.src, p.dst, p.sport) == (server_ip, client_ip, server_port):
        return p.dport
    return None


def client_ports(packets, client_ip: str, server_ip: str, server_port: int) -> list[int]:
    """The client ports of the capture's connections: those with a client SYN in the order of
    their first SYN (a stray packet of an earlier run must not come first), then the others in
    the order of their first packet."""
    syn, seen = [], []
    for p in packets:
        port = _client_port(p, client_ip, server_ip, server_port)
        if port is None:
            continue
        if port not in seen:
            seen.append(port)
        if p.src == client_ip and p.flags & SYN and not p.flags & ACK and port not in syn:
            syn.append(port)
    return syn + [port for port in seen if port not in syn]


class Conv:
    """The packets of one connection, with the look-ups that ``echo``/``latest`` need.
    ``client_port`` None: the capture's first connection (:func:`client_ports`)."""

    def __init__(self, packets, client_ip, server_ip, server_port, client_port=None):
        self.all = packets
        self.others: list[Pkt] = []
        conv = []
        cport = client_port
        if cport is None:
            ports = client_ports(packets, client_ip, server_ip, server_port)
            cport = ports[0] if ports else None
        for p in packets:
            port = _client_port(p, client_ip, server_ip, server_port)
            if port is None or port != cport:
                self.others.append(p)
                continue
            conv.append(p)
        self.client_port = cport
        self.client_ip, self.server_port = client_ip, server_port
        self.pkts = conv
        self.server = [p for p in conv if p.src == server_ip]
        self.client = [p for p in conv if p.src != server_ip]
        self.server_ip = server_ip

    def is_server(self, p: Pkt) -> bool:
        return p.src == self.server_ip

    def peer_before(self, p: Pkt) -> list[Pkt]:
        """Packets of the other side captured before ``p``."""
        side = self.client if self.is_server(p) else self.server
        return [q for q in side if q.number < p.number]

    def own_before(self, p: Pkt) -> Pkt | None:
        side = self.server if self.is_server(p) else self.client
        prev = [q for q in side if q.number < p.number]
        return prev[-1] if prev else None

    @property
    def last_number(self) -> int | None:
        return self.all[-1].number if self.all else None



# ---------------------------------------------------------------- field checks

def _val_ok(val: Val, actual: int, peer_values: list) -> bool:
    if val.kind == "any":
        return True
    if val.kind == "exact":
        return actual == val.lo
    if val.kind == "range":
        return val.lo <= actual <= val.hi
    if val.kind == "echo":
        return actual in peer_values
    if val.kind == "latest":
        return bool(peer_values) and actual == peer_values[-1]
    raise AssertionError(val.kind)


def _ts_problem(spec, actual, p: Pkt, conv: Conv) -> str | None:
    """Why TS (val, ecr) ``actual`` does not satisfy ``spec``; None if it does."""
    peer_vals = [q.option("TS")[0] for q in conv.peer_before(p) if q.option("TS")]
    who = "client" if conv.is_server(p) else "responder"
    for i, (name, want, got) in enumerate(zip(("val", "ecr"), spec, actual)):
        if not _val_ok(want, got, peer_vals):
            if want.kind == "echo":
                return f"{name} {got} is no TSval the {who} sent before"
            if want.kind == "latest":
                last = peer_vals[-1] if peer_vals else "none"
                return f"{name} {got} is not the {who}'s latest TSval ({last})"
            return f"{name} {got} is not {want}"
        if want.kind in ("echo", "latest"):
            prev = conv.own_before(p)
            prev_ts = prev.option("TS") if prev else None
            if prev_ts and seq_lt(got, prev_ts[i]):
                return (f"{name} {got} went backwards (packet {prev.number} had "
                        f"{name} {prev_ts[i]})")
    return None


def _opt_problem(spec, name, value, p: Pkt, conv: Conv) -> str | None:
    if spec.name != name:
        return f"expected {spec}, got {format_options([(name, value)])}"
    if spec.name == "TS":
        return _ts_problem(spec.value, value, p, conv)
    if spec.name == "sack":
        if spec.value is not None and not isinstance(spec.value, Val):
            base = (p.ack_raw - p.ack) & 0xFFFFFFFF
            rel = tuple(((a - base) & 0xFFFFFFFF, (b - base) & 0xFFFFFFFF) for a, b in value)
            if rel != spec.value:
                return f"expected {spec}, got sack " + "".join(f"{{{a}:{b}}}" for a, b in rel)
        return None
    if isinstance(spec.value, Val) and not _val_ok(spec.value, value, []):
        return f"expected {spec}, got {name} {value}"
    return None


#: Options a SYN,ACK may carry only if the SYN offered them (RFC 7323 2.2, 3.2; RFC 2018 2).
_OFFERED_ONLY = ("wscale", "TS", "sackOK")


def _invalid_options(p: Pkt, conv: Conv) -> str | None:
    """``options valid``: why ``p``'s options break what TCP requires, or None."""
    names = [n for n, _ in p.options]
    if "bad" in names:
        return "the option list is malformed (an option's length runs past the header)"
    for name, value in p.options:
        if name == "mss" and not value:
            return "mss 0"
        if name == "wscale" and value > 14:
            return f"wscale {value} is above 14 (RFC 7323 2.3)"
        if name in ("mss", "wscale", "sackOK") and not p.flags & SYN:
            return f"{name} outside a SYN (RFC 9293 3.2, RFC 7323 2.2, RFC 2018 2)"
    if p.flags & SYN and p.flags & ACK:
        syn = next((q for q in conv.peer_before(p) if q.flags & SYN and not q.flags & ACK), None)
        offered = {n for n, _ in syn.options} if syn else set()
        for name in _OFFERED_ONLY:
            if name in names and name not in offered:
                return f"{name} in the SYN,ACK, but the SYN did not offer it"
    return None


def _options_problem(spec: OptionsSpec, p: Pkt, conv: Conv) -> str | None:
    got = p.options
    if spec.mode == "valid":
        return _invalid_options(p, conv)
    if spec.mode == "echo":
        if any(q.options == got for q in conv.peer_before(p)):
            return None
        return "the options are not a copy of any earlier peer packet's"
    if spec.mode == "exact":
        if len(spec.items) != len(got):
            return f"{len(spec.items)} options expected, {len(got)} sent"
        for i, (s, (name, value)) in enumerate(zip(spec.items, got), 1):
            why = _opt_problem(s, name, value, p, conv)
            if why:
                return f"option {i}: {why}"
        return None
    for s in spec.items:                                   # contains
        if s.name in ("nop", "eol"):
            continue
        cands = [(n, v) for n, v in got if n == s.name]
        if not cands:
            return f"no {s.name} option"
        whys = [_opt_problem(s, n, v, p, conv) for n, v in cands]
        if all(whys):
            return whys[0]
    return None


def seq_text(seq, length):
    return f"{seq}:{seq + length}" if length else str(seq)


def check_fields(e: Expect, p: Pkt, conv: Conv, core: bool = False) -> list[str]:
    """Every way packet ``p`` differs from line ``e`` (timing aside), as
    ``expected X, got Y`` phrases; an empty list is a match.  ``core``: only the fields that
    identify a segment (flags, seq, length, ack), for realigning after a missing or extra one."""
    out = []
    server = e.from_server
    pure = not server and e.is_pure_ack
    if not pure and p.flags & ~e.flags_maybe != e.flags:
        out.append(f"expected flags [{e.flags_text}], got [{p.flags_str}]")
    want_len = e.length if e.length is not None else (0 if server else None)
    length_done = False
    if e.seq is not None:
        ranged = e.length is not None and e.length > 0
        if p.seq != e.seq or (ranged and p.length != e.length):
            out.append(f"expected seq {seq_text(e.seq, e.length if ranged else 0)}, "
                       f"got {seq_text(p.seq, p.length if ranged or p.length else 0)}")
            length_done = ranged
    if want_len is not None and not length_done and p.length != want_len:
        out.append(f"expected length {want_len}, got {p.length}")
    if e.payload is not None and p.payload != e.payload and p.length == want_len:
        first = next((i for i, (a, b) in enumerate(zip(e.payload, p.payload)) if a != b), 0)
        out.append(f'expected payload "{c_escape(e.payload)}", got "{c_escape(p.payload)}" '
                   f"(first difference at byte {first})")
    if e.ack is not None:
        if not p.flags & ACK:
            out.append(f"expected ack {e.ack}, got no ACK flag")
        elif server and p.ack != e.ack:
            out.append(f"expected ack {e.ack}, got {p.ack}")
        elif not server and p.ack < e.ack:
            out.append(f"expected ack >= {e.ack}, got {p.ack}")
    if core:
        return out
    if e.rawseq is not None and p.seq_raw != e.rawseq:
        out.append(f"expected rawseq {e.rawseq:#010x}, got {p.seq_raw:#010x}")
    if e.win is not None:
        peer_wins = [q.window for q in conv.peer_before(p)]
        if not _val_ok(e.win, p.window, peer_wins):
            out.append(f"expected win {e.win}, got {p.window}")
    if e.options is not None:
        why = _options_problem(e.options, p, conv)
        if why:
            out.append(f"expected options {e.options}, got [{format_options(p.options)}]"
                       f" ({why})")
    if e.analysis is not None:
        if not e.analysis and p.analysis:
            out.append(f"expected analysis none, got {' '.join(sorted(p.analysis))}")
        elif not e.analysis <= p.analysis:
            out.append(f"expected analysis {' '.join(sorted(e.analysis))}, got "
                       f"{' '.join(sorted(p.analysis)) or 'none'}")
    elif server and p.analysis & SERVER_BAD_ANALYSIS:
        out.append(f"expected no Wireshark analysis flag, got "
                   f"{' '.join(sorted(p.analysis & SERVER_BAD_ANALYSIS))}")
    if server:
        if not p.ip_checksum_ok:
            out.append("expected a correct IP checksum, got a bad one")
        if not p.tcp_checksum_ok:
            out.append("expected a correct TCP checksum, got a bad one")
    return out



def renumber(packets: list[Pkt], client_ip: str = "192.168.56.1",
             server_ip: str = "192.168.56.100", server_port: int = 80) -> list[Pkt]:
    """``packets`` with every connection's relative seq/ack counted from *its* two ISNs (its
    first SYN and SYN,ACK).  Wireshark restarts its relative numbers at any later SYN of the
    same ports -- which is exactly what an RFC 5961 lesson sends in the middle of the
    connection -- and would number the rest of the exchange from that stray SYN."""
    out = list(packets)
    where = {id(p): i for i, p in enumerate(packets)}
    for port in client_ports(packets, client_ip, server_ip, server_port):
        conv = Conv(packets, client_ip, server_ip, server_port, port)
        syn = next((p for p in conv.client if p.flags & SYN and not p.flags & ACK), None)
        synack = next((p for p in conv.server if p.flags & SYN and p.flags & ACK), None)
        if syn is None or synack is None:
            continue
        isn = {True: synack.seq_raw, False: syn.seq_raw}          # keyed by "from the server"
        for p in conv.pkts:
            own, peer = isn[conv.is_server(p)], isn[not conv.is_server(p)]
            seq = (p.seq_raw - own) & 0xFFFFFFFF
            ack = (p.ack_raw - peer) & 0xFFFFFFFF if p.flags & ACK else 0
            if (seq, ack) != (p.seq, p.ack):
                out[where[id(p)]] = replace(p, seq=seq, ack=ack)
    return out
