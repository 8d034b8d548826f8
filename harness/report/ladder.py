"""The ladder (sequence) diagram of a run, as a hand-written SVG.

Two vertical lines -- the client (host side) on the left, the responder (lab VM) on the right --
and one arrow per packet of the connection (with ``clients: N``, of every connection, each
label starting ``c1``, ``c2`` ...), top to bottom in capture order, labelled the way
tcpdump prints it (``[P.] seq 1:12, ack 1, len 11``) with its time on the left and its verdict
on the right: a green ✓ and the scenario line it matched, a red ✗ and the line it failed, a
grey · for a packet no line speaks about (an extra client ACK, a trailing packet).  Arrows go
down a little so that each looks like what it is, a packet in flight.  No dependency: the SVG
is text, and opens in any browser (and on GitHub).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from harness.judge.dissect import Pkt
from harness.judge.match import Verdict

ROW = 34            # vertical space per packet
TOP = 70
LEFT_X = 170        # client's line
RIGHT_X = 560       # responder's line
WIDTH = 1150
DROP = 14           # how far an arrow descends
GREEN, RED, GREY, INK = "#1a7f37", "#cf222e", "#6e7781", "#24292f"


def _label(p: Pkt, conn: str = "") -> str:
    out = f"{conn}[{p.flags_str}] seq {p.seq}" + (f":{p.seq + p.length}" if p.length else "")
    if p.flags_str.find(".") >= 0:
        out += f", ack {p.ack}"
    out += f", win {p.window}"
    if p.length:
        out += f", len {p.length}"
    return out


def _verdict(p: Pkt, verdict: Verdict) -> tuple[str, str, str]:
    """(mark, colour, text) for packet ``p``."""
    notes = verdict.notes.get(p.number, [])
    if p.number in verdict.bad_packets:
        failed = [n[2:] for n in notes if n.startswith("✗ ")]
        return "✗", RED, failed[0] if failed else "failed"
    lines = [n for n in notes if ".scn:" in n]
    if lines:
        return "✓", GREEN, lines[0]
    return "·", GREY, notes[0] if notes else ""


def ladder_svg(packets: list[Pkt], verdict: Verdict, title: str = "") -> str:
    """The SVG text of the ladder diagram of ``verdict``'s connection."""
    server = verdict.server
    conv = [p for p in packets if server in (f"{p.src}.{p.sport}", f"{p.dst}.{p.dport}")]
    height = TOP + ROW * max(1, len(conv)) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans Mono, Menlo, monospace" '
           f'font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
           f'fill="{INK}"/></marker></defs>',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{WIDTH // 2}" y="20" text-anchor="middle" font-size="14" '
                   f'font-weight="bold" fill="{INK}">{escape(title)}</text>')
    result = "PASS" if verdict.ok else "FAIL"
    out.append(f'<text x="{WIDTH // 2}" y="38" text-anchor="middle" '
               f'fill="{GREEN if verdict.ok else RED}">{result}: {escape(verdict.reason[:120])}'
               f'</text>')
    bottom = TOP + ROW * max(1, len(conv))
    clients = verdict.clients
    tags = {c: f"c{i} " for i, c in enumerate(clients, 1)} if len(clients) > 1 else {}
    left = "clients " + ", ".join(f"c{i} .{c.rsplit('.', 1)[-1]}" for i, c in
                                  enumerate(clients, 1)) if tags else f"client {verdict.client}"
    for x, name in ((LEFT_X, left), (RIGHT_X, f"responder {server}")):
        out.append(f'<text x="{x}" y="{TOP - 12}" text-anchor="middle" font-weight="bold" '
                   f'fill="{INK}">{escape(name)}</text>')
        out.append(f'<line x1="{x}" y1="{TOP - 5}" x2="{x}" y2="{bottom}" stroke="{INK}" '
                   f'stroke-width="2"/>')
    out.append(f'<text x="10" y="{TOP - 12}" fill="{GREY}">time (s)</text>')
    for i, p in enumerate(conv):
        y = TOP + ROW * i + 8
        from_server = f"{p.src}.{p.sport}" == server
        x1, x2 = (RIGHT_X, LEFT_X) if from_server else (LEFT_X, RIGHT_X)
        mark, colour, text = _verdict(p, verdict)
        width = 3 if mark == "✗" else 1.5
        stroke = RED if mark == "✗" else INK
        dash = ' stroke-dasharray="5,4"' if "retransmission" in p.analysis else ""
        out.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y + DROP}" stroke="{stroke}" '
                   f'stroke-width="{width}"{dash} marker-end="url(#arrow)"/>')
        end = f"{p.dst}.{p.dport}" if from_server else f"{p.src}.{p.sport}"
        out.append(f'<text x="{(x1 + x2) // 2}" y="{y + DROP / 2 - 4}" text-anchor="middle" '
                   f'fill="{INK}">{escape(_label(p, tags.get(end, "")))}</text>')
        if p.analysis:
            out.append(f'<text x="{(x1 + x2) // 2}" y="{y + DROP / 2 + 16}" '
                       f'text-anchor="middle" font-size="10" fill="{GREY}">'
                       f'{escape(", ".join(sorted(p.analysis)))}</text>')
        out.append(f'<text x="10" y="{y + DROP / 2 + 4}" fill="{GREY}">#{p.number} '
                   f'{p.time:.3f}</text>')
        out.append(f'<text x="{RIGHT_X + 20}" y="{y + DROP / 2 + 4}" fill="{colour}">'
                   f'{mark} {escape(text[:70])}</text>')
    if not conv:
        out.append(f'<text x="{WIDTH // 2}" y="{TOP + 20}" text-anchor="middle" '
                   f'fill="{RED}">(no packets of the connection were captured)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_ladder(path, packets: list[Pkt], verdict: Verdict, title: str = "") -> Path:
    path = Path(path)
    path.write_text(ladder_svg(packets, verdict, title), encoding="utf-8")
    return path
