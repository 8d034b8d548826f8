"""Judge a captured exchange against a scenario.

Rules (docs/scenarios.md explains them for teachers):

* Responder packets (``s>c``) are matched exactly and in order, one line per packet: flags,
  relative seq/ack, length (0 unless stated), payload, options and window when stated, our own
  IP/TCP checksum verification, and no Wireshark retransmission/out-of-order/lost-segment flag
  unless the line states it.  No extra responder packet is allowed; TSval never goes backwards.
* Client packets (``c>s``) get what TCP guarantees, not the Linux client's exact choices.  A
  pure-ACK line ``ack N`` is satisfied by any client packet at or after the previous client
  match whose ack is >= N (one cumulative ACK may satisfy several lines; so may a FIN+ACK).
  Client lines with SYN, FIN, RST or data consume the client's non-pure-ACK packets in order;
  extra client pure ACKs are fine; a client RST is never fine unless a line states it; a client
  ack on any line means "at least".
* Timing is checked only where a line states ``after REF within LO-HI``.
* A ``maybe s>c`` line may have no packet: when the responder's next packet does not fit its
  flags, seq, length and ack, the line is "absent" (ok) and that packet goes to the next line.

The verdict is a value plus a reason (style card item 8): :class:`Verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.judge.dissect import ACK, RST, Pkt
from harness.judge.fields import (SERVER_BAD_ANALYSIS, Conv, check_fields, client_ports,
                                  renumber, seq_lt, seq_text)
from harness.judge.scenario import DIRECTIONS, Expect, Scenario


@dataclass
class LineResult:
    """How one expect line fared: the packet (frame number) it matched, or why not."""

    line: Expect
    ok: bool = False
    packet: int | None = None
    time: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return {"line": self.line.lineno, "index": self.line.index, "text": self.line.text,
                "ok": self.ok, "packet": self.packet, "time": self.time,
                "message": self.message}


@dataclass
class Verdict:
    """``ok`` and ``reason`` say it all; the rest explains it line by line, packet by packet."""

    ok: bool
    reason: str
    lines: list = field(default_factory=list)          # LineResult per expect line
    notes: dict = field(default_factory=dict)          # frame number -> [note, ...]
    failures: list = field(default_factory=list)       # every failure message, in line order
    bad_packets: set = field(default_factory=set)      # frame numbers marked ✗
    client: str = ""                                   # "192.168.56.1.40000", tcpdump style
    server: str = ""                                   # "192.168.56.100.80"
    not_applicable: list = field(default_factory=list)  # checks that could not apply, and why
    connections: list = field(default_factory=list)    # Verdict per connection (clients: N)

    def __bool__(self):
        return self.ok

    @property
    def clients(self) -> list[str]:
        """Every judged connection's client end, in order (one for a one-client scenario)."""
        if self.connections:
            return [c.client for c in self.connections]
        return [self.client] if self.client else []

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "failures": list(self.failures),
                "lines": [r.to_dict() for r in self.lines],
                "notes": {str(k): v for k, v in sorted(self.notes.items())},
                "bad_packets": sorted(self.bad_packets),
                "client": self.client, "server": self.server,
                "not_applicable": list(self.not_applicable),
                "connections": [{"client": c.client, "ok": c.ok, "reason": c.reason,
                                 "failures": list(c.failures),
                                 "lines": [r.to_dict() for r in c.lines]}
                                for c in self.connections]}


# ---------------------------------------------------------------- the matcher

#: The note of a packet that belongs to no connection the scenario judges.
OTHER_CONNECTION = "not this connection (ignored)"


class _Judge:
    """Judges one connection against every expect line; ``tag`` names the connection in every
    message when a scenario has several (``connection 2``)."""

    def __init__(self, scenario: Scenario, conv: Conv, tag: str = ""):
        self.sc = scenario
        self.conv = conv
        self.tag = tag
        self.results = [LineResult(e) for e in scenario.expects]
        self.failures: list[tuple[float, str]] = []
        self.notes: dict[int, list[str]] = {}
        self.bad: set[int] = set()
        self.used: set[int] = set()

    # -- bookkeeping
    def note(self, p: Pkt, text: str):
        self.notes.setdefault(p.number, []).append(text)

    def where(self, e: Expect) -> str:
        return f"{self.sc.filename}:{e.lineno}" + (f" ({self.tag})" if self.tag else "")

    def pkt_name(self, p: Pkt) -> str:
        side = "s>c" if self.conv.is_server(p) else "c>s"
        return f"packet {p.number} ({DIRECTIONS[side]})"

    def fail(self, e: Expect, msg: str, p: Pkt | None = None, order: float | None = None):
        text = f"{self.where(e)}: " + (f"{self.pkt_name(p)}: " if p else "") + msg
        self.failures.append((e.lineno if order is None else order, text))
        r = self.results[e.index - 1]
        if not r.message:
            r.ok, r.message = False, text
        if p is not None:
            self.bad.add(p.number)
            self.note(p, f"✗ {self.where(e)}: {msg}")

    def matched(self, e: Expect, p: Pkt, extra: str = ""):
        r = self.results[e.index - 1]
        r.ok, r.packet, r.time = True, p.number, p.time
        self.used.add(p.number)
        self.note(p, f"{self.where(e)}{extra}")

    def absent(self, e: Expect, p: Pkt | None = None):
        """A ``maybe`` line whose packet did not come (``p``, if given, is the next line's)."""
        r = self.results[e.index - 1]
        r.ok = True
        r.message = (f"{self.where(e)}: maybe: absent (packet {p.number} is not "
                     f"{e.describe()})" if p else f"{self.where(e)}: maybe: absent")

    def ended(self) -> str:
        last = self.conv.last_number
        return f"capture ended after packet {last}" if last else "capture has no packets"

    # -- responder side: exact, in order, one line per packet
    def server(self):
        lines = [e for e in self.sc.expects if e.from_server]
        pkts = self.conv.server
        def ok(e, p):  # the lookahead: do the segment's identity fields fit this line?
            return not check_fields(e, p, self.conv, core=True)

        i = j = 0
        while i < len(lines) and j < len(pkts):
            e, p = lines[i], pkts[j]
            diffs = check_fields(e, p, self.conv)
            if not diffs:
                self.matched(e, p)
                i, j = i + 1, j + 1
            elif e.optional and not ok(e, p):
                self.absent(e, p)           # 'maybe': not this packet; it is the next line's
                i += 1
            elif j + 1 < len(pkts) and ok(e, pkts[j + 1]):
                self.fail(e, f"unexpected packet [{p.flags_str}] {_pkt_fields(p)}"
                             f"{_analysis_note(p)} before the one this line expects", p)
                j += 1
            elif i + 1 < len(lines) and ok(lines[i + 1], p):
                self.fail(e, f"no server→client packet {e.describe()} (packet {p.number} "
                             f"matches the next line, {self.where(lines[i + 1])})")
                i += 1
            else:
                for d in diffs:
                    self.fail(e, d, p)
                self.results[e.index - 1].packet = p.number
                i, j = i + 1, j + 1
        for e in lines[i:]:
            if e.optional:
                self.absent(e)
            else:
                self.fail(e, f"no server→client packet {e.describe()} ({self.ended()})")
        for p in pkts[j:]:
            self.leftover(lines, p)

    def leftover(self, lines, p: Pkt):
        if self.sc.trailing == "allow" and not (self.conv.is_server(p)
                                                and p.analysis & SERVER_BAD_ANALYSIS):
            self.note(p, "after the last line (trailing: allow)")
            return
        last = lines[-1] if lines else self.sc.expects[-1]
        side = "server" if self.conv.is_server(p) else "client"
        extra = " — a client RST is never allowed unless stated" if p.flags & RST else ""
        self.fail(last, f"unexpected packet [{p.flags_str}] {_pkt_fields(p)}"
                        f"{_analysis_note(p)} after the last {side} line{extra}", p,
                  order=last.lineno + 0.5)

    # -- client side: what TCP guarantees
    def client(self):
        lines = [e for e in self.sc.expects if not e.from_server]
        cpk = self.conv.client
        consuming = [k for k, p in enumerate(cpk) if not p.is_pure_ack]
        pos = 0          # index into cpk of the latest client match
        kpos = 0         # next index into consuming
        prev_consumed: Pkt | None = None
        for e in lines:
            if e.is_pure_ack:
                pos = self.client_ack(e, cpk, pos)
                continue
            # skip client retransmissions of the segment consumed last (unless this line is
            # about one: ``analysis retransmission``)
            wants_rexmit = e.analysis is not None and "retransmission" in e.analysis
            while (kpos < len(consuming) and prev_consumed is not None and not wants_rexmit
                   and _same_segment(cpk[consuming[kpos]], prev_consumed)):
                self.note(cpk[consuming[kpos]], "client retransmission (allowed)")
                self.used.add(cpk[consuming[kpos]].number)
                kpos += 1
            if kpos >= len(consuming):
                self.fail(e, f"no client→server packet {e.describe()} ({self.ended()})")
                continue
            k = consuming[kpos]
            p = cpk[k]
            kpos += 1
            prev_consumed = p
            diffs = check_fields(e, p, self.conv)
            if k < pos:
                diffs.append(f"expected it after packet {cpk[pos].number}, which an earlier "
                             f"line matched")
            if diffs:
                for d in diffs:
                    self.fail(e, d, p)
                self.results[e.index - 1].packet = p.number
            else:
                self.matched(e, p)
            pos = max(pos, k)
        for k in consuming[kpos:]:
            p = cpk[k]
            if prev_consumed is not None and _same_segment(p, prev_consumed):
                self.note(p, "client retransmission (allowed)")
                continue
            self.leftover(lines, p)

    def client_ack(self, e: Expect, cpk, pos: int) -> int:
        want = e.ack if e.ack is not None else 0
        if e.analysis or e.seq is not None:
            return self.client_distinct_ack(e, cpk, pos)
        for k in range(pos, len(cpk)):
            p = cpk[k]
            if p.flags & ACK and not p.flags & RST and p.ack >= want:
                diffs = check_fields(e, p, self.conv)
                if diffs:
                    for d in diffs:
                        self.fail(e, d, p)
                    self.results[e.index - 1].packet = p.number
                else:
                    self.matched(e, p, " (cumulative)" if p.ack > want or not p.is_pure_ack
                                 else "")
                return k
        acks = [p.ack for p in cpk[pos:] if p.flags & ACK]
        seen = f"highest client ack seen: {max(acks)}; " if acks else ""
        start = f" at or after packet {cpk[pos].number}" if cpk else ""
        self.fail(e, f"no client→server packet acking {want}{start} ({seen}{self.ended()})")
        return pos

    def client_distinct_ack(self, e: Expect, cpk, pos: int) -> int:
        """A pure-ACK line that states ``analysis`` or ``seq`` (a window probe, a keep-alive,
        a duplicate ACK) names one packet of its own: the first unused client ACK from ``pos``
        on whose fields all match."""
        first_diffs = None
        ref = self.results[e.timing.ref] if e.timing and not e.timing.relative else None
        for k in range(pos, len(cpk)):
            p = cpk[k]
            if p.number in self.used or not p.is_pure_ack:
                continue
            if ref is not None and ref.time is not None and p.time < ref.time:
                continue                 # "after @x": not one from before that packet
            diffs = check_fields(e, p, self.conv)
            if not diffs:
                self.matched(e, p)
                return k
            first_diffs = first_diffs or (p, diffs)
        if first_diffs:
            p, diffs = first_diffs
            self.fail(e, f"no client→server ACK matches {e.describe()} (the first candidate, "
                         f"packet {p.number}: {'; '.join(diffs)})")
        else:
            self.fail(e, f"no client→server ACK {e.describe()} ({self.ended()})")
        return pos

    # -- cross-line checks
    def interval(self, e: Expect) -> tuple[float, int] | None:
        """(seconds, ref packet) from line ``e.timing.ref``'s packet to ``e``'s, if both came."""
        r, ref = self.results[e.index - 1], self.results[e.timing.ref]
        if r.packet is None or ref.packet is None or r.time is None or ref.time is None:
            return None
        return r.time - ref.time, ref.packet

    def timing(self):
        for e in self.sc.expects:
            if e.timing is None:
                continue
            got = self.interval(e)
            if got is None:
                continue
            dt, ref_packet = got
            lo, hi, base = e.timing.lo, e.timing.hi, ""
            if e.timing.relative:
                ref_line = self.sc.expects[e.timing.ref]
                ref_got = self.interval(ref_line)
                if ref_got is None:
                    continue
                lo, hi = lo * ref_got[0], hi * ref_got[0]
                base = f" ({dt / ref_got[0]:.2f}x the {ref_got[0]:.3f}s before it)" \
                    if ref_got[0] > 0 else ""
            if not lo <= dt <= hi:
                p = next(q for q in self.conv.pkts if q.number == self.results[e.index - 1].packet)
                self.fail(e, f"expected {e.timing}, got {dt:.3f}s after packet {ref_packet}"
                             f"{base}", p)

    def server_timestamps(self):
        by_packet = {r.packet: r.line for r in self.results if r.packet is not None}
        prev = None
        for p in self.conv.server:
            ts = p.option("TS")
            if ts is None or p.number not in by_packet:   # unmatched packets fail anyway
                continue
            if prev is not None and seq_lt(ts[0], prev.option("TS")[0]):
                e = by_packet[p.number]
                self.fail(e, f"TSval went backwards: {ts[0]} after {prev.option('TS')[0]} in "
                             f"packet {prev.number}", p)
            prev = p

    def verdict(self, others: bool = True) -> Verdict:
        """The verdict of this connection (``others``: note the other packets as ignored)."""
        for p in self.conv.others if others else ():
            self.note(p, OTHER_CONNECTION)
        for p in self.conv.pkts:
            if p.number not in self.used and p.number not in self.notes:
                self.note(p, "extra client ACK (allowed)" if p.is_pure_ack
                          else "not matched")
        msgs = [m for _, m in sorted(self.failures, key=lambda t: t[0])]
        ok = not msgs
        if ok:
            n = len(self.conv.pkts)
            reason = (f"{self.sc.filename}: all {len(self.sc.expects)} lines matched "
                      f"({n} packets of the connection)")
        else:
            reason = msgs[0] + (f" (+{len(msgs) - 1} more)" if len(msgs) > 1 else "")
        c = self.conv
        return Verdict(ok, reason, self.results, self.notes, msgs, self.bad,
                       client=f"{c.client_ip}.{c.client_port if c.client_port else '*'}",
                       server=f"{c.server_ip}.{c.server_port}")


def _same_segment(a: Pkt, b: Pkt) -> bool:
    return (a.flags, a.seq, a.length, a.payload) == (b.flags, b.seq, b.length, b.payload)


def _pkt_fields(p: Pkt) -> str:
    out = f"seq {seq_text(p.seq, p.length)}"
    if p.flags & ACK:
        out += f", ack {p.ack}"
    return out + f", length {p.length}"


def _analysis_note(p: Pkt) -> str:
    return f" (Wireshark: {', '.join(sorted(p.analysis))})" if p.analysis else ""


def match(scenario: Scenario, packets: list[Pkt], client_ip: str = "192.168.56.1",
          server_ip: str = "192.168.56.100", server_port: int = 80) -> Verdict:
    """Judge ``packets`` (from :func:`harness.judge.dissect.read_pcap`) against ``scenario``:
    its one connection, or with ``clients: N`` each of the first N connections separately
    against every expect line."""
    packets = renumber(packets, client_ip, server_ip, server_port)
    if scenario.clients == 1:
        return _judge(scenario, Conv(packets, client_ip, server_ip, server_port))
    ports = client_ports(packets, client_ip, server_ip, server_port)[:scenario.clients]
    parts = [_judge(scenario, Conv(packets, client_ip, server_ip, server_port, port),
                    f"connection {i}", others=False) for i, port in enumerate(ports, 1)]
    return _combine(scenario, packets, parts, f"{server_ip}.{server_port}")


def _judge(scenario: Scenario, conv: Conv, tag: str = "", others: bool = True) -> Verdict:
    judge = _Judge(scenario, conv, tag)
    judge.server()
    judge.client()
    judge.timing()
    judge.server_timestamps()
    return judge.verdict(others)


def _combine(scenario: Scenario, packets: list[Pkt], parts: list[Verdict],
             server: str) -> Verdict:
    """One verdict for ``clients: N``: every connection's notes and failures (each names its
    connection); the lines are the first connection's; a missing connection fails."""
    n, name = scenario.clients, scenario.filename
    notes: dict = {}
    bad: set = set()
    failures: list = []
    for v in parts:
        notes.update(v.notes)
        bad |= v.bad_packets
        failures += v.failures
    for p in packets:
        notes.setdefault(p.number, [OTHER_CONNECTION])
    if len(parts) < n:
        failures.append(f"{name}: clients: expected {n} connections (clients: {n}), the "
                        f"capture has {len(parts)}")
    if failures:
        reason = failures[0] + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")
    else:
        reason = (f"{name}: all {len(scenario.expects)} lines matched on each of the {n} "
                  f"connections")
    lines = parts[0].lines if parts else [LineResult(e) for e in scenario.expects]
    return Verdict(not failures, reason, lines, notes, failures, bad,
                   client=parts[0].client if parts else "", server=server, connections=parts)


# ---------------------------------------------------------------- checks beyond the packets

def transitions(responder_log: str) -> list[tuple[str, str]]:
    """The responder's logged state changes (``... SYN-RECEIVED => ESTABLISHED``), in order."""
    out = []
    for line in responder_log.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-2] == "=>":
            out.append((words[-3], words[-1]))
    return out


def measurements(scenario: Scenario, verdict: Verdict) -> dict:
    """``measure: NAME @a @b`` -> {NAME: seconds from @a's packet to @b's} (None if missing)."""
    out = {}
    for m in scenario.measures:
        a, b = verdict.lines[m.start], verdict.lines[m.end]
        out[m.name] = (round(b.time - a.time, 6) if a.time is not None and b.time is not None
                       else None)
    return out


def check_run(scenario: Scenario, verdict: Verdict, *, responder_log: str = "",
              counters: dict | None = None, held: bool | None = None,
              own_logs: bool = True) -> Verdict:
    """Add the scenario's run-level checks to ``verdict`` (in place, and returned): the
    responder's state transitions (``states:``, in this order, others may come between), its
    exit counters (``counters:``), and whether the client was held (``hold:``).

    ``own_logs=False``: the program in the VM is not tcplab's responder (a submission), so
    nothing it prints can be read as tcplab's transition log or counters: ``states:`` and
    ``counters:`` are recorded in ``verdict.not_applicable`` -- neither passed nor failed."""
    fails = []
    where = scenario.filename
    if not own_logs:
        for key, present in (("states", scenario.states), ("counters", scenario.counters)):
            if present:
                verdict.not_applicable.append(
                    f"{where}: {key}: n/a (reads tcplab's own responder log, which this "
                    f"program does not write)")
    elif scenario.states:
        seen = transitions(responder_log)
        k = 0
        for want in scenario.states:
            while k < len(seen) and seen[k] != want:
                k += 1
            if k == len(seen):
                logged = ", ".join(f"{a} => {b}" for a, b in seen) or "none"
                fails.append(f"{where}: states: the responder never logged {want[0]} => "
                             f"{want[1]} (after the ones before it); it logged: {logged}")
                break
            k += 1
    counters = counters or {}
    drops = counters.get("drops") if isinstance(counters.get("drops"), dict) else {}
    for c in scenario.counters if own_logs else ():
        actual = counters.get(c.name, drops.get(c.name))
        if not c.holds(actual):
            got = actual if actual is not None else (
                "no such counter" if counters else "no counters (the responder printed none)")
            fails.append(f"{where}: counters: expected {c}, got {got}")
    if scenario.hold is not None and held is False:
        fails.append(f"{where}: hold: expected the client to be still held after "
                     f"{scenario.hold:g} s, but it had finished")
    if fails:
        verdict.failures.extend(fails)
        verdict.ok = False
        n = len(verdict.failures)
        verdict.reason = verdict.failures[0] + (f" (+{n - 1} more)" if n > 1 else "")
    return verdict
