"""Run reports: the transcript (by the real tcpdump), the machine-readable result, the summary.

``write_run`` writes, into a run's folder beside its pcapng:

* ``transcript.txt`` -- ``tcpdump -n -vx -r CAPTURE tcp``, the lecture's own format, so a
  student can hold it next to the notes;
* ``result.json`` -- scenario, verdict and reason, every line's match (packet number, time),
  every packet's notes, timings and tool versions, plus whatever the caller passes in
  ``extra`` (lab backend, durations, responder counters ...).

``format_summary`` is what the terminal shows: one tcpdump-style line per packet with a ✓/✗
mark and the scenario line it matched, then the failures and the verdict line.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from harness.judge.dissect import Pkt, format_options
from harness.judge.match import Verdict
from harness.judge.scenario import Scenario, c_escape

TRANSCRIPT = "transcript.txt"
RESULT = "result.json"
TCPDUMP_ARGS = ("-n", "-vx")


def tcpdump_transcript(pcap: Path, tcpdump: str = "tcpdump") -> str:
    """What ``tcpdump -n -vx -r PCAP tcp`` prints (stdout), or raise ``RuntimeError``."""
    exe = shutil.which(tcpdump)
    if exe is None:
        raise RuntimeError(f"{tcpdump} is not installed")
    proc = subprocess.run([exe, *TCPDUMP_ARGS, "-r", str(pcap), "tcp"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"tcpdump failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _first_line(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip().splitlines()
    return text[0] if text else None


def versions() -> dict:
    """Versions of what made and judged the run."""
    out = {"python": platform.python_version(),
           "tshark": _first_line(["tshark", "--version"]),
           "tcpdump": _first_line(["tcpdump", "--version"])}
    for dist in ("pyshark", "scapy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _direction(p: Pkt, verdict: Verdict) -> str:
    src = f"{p.src}.{p.sport}"
    if src == verdict.server:
        return "s>c"
    if src in verdict.clients:
        return "c>s"
    return "   "


def _packet_fields(p: Pkt) -> str:
    """tcpdump's fields after the addresses, relative numbers (like ``tcpdump -n``)."""
    return p.tcpdump_line().split(": ", 1)[1]


def _packet_line(p: Pkt, verdict: Verdict) -> str:
    notes = verdict.notes.get(p.number, [])
    if p.number in verdict.bad_packets:
        mark = "✗"
    elif any(n.startswith("not this connection") for n in notes):
        mark = "·"
    else:
        mark = "✓"
    # a failed packet shows where it failed ("✗ hello.scn:18"); the failures follow in full
    where = "; ".join(n.split(": ", 1)[0] if n.startswith("✗") else n for n in notes)
    d = _direction(p, verdict)
    head = f"{mark} {p.number:3d} {p.time:10.6f}  {d}  "
    body = _packet_fields(p) if d.strip() else p.tcpdump_line()
    return f"{head}{body}" + (f"   [{where}]" if where else "")


def format_summary(scenario: Scenario, packets: list[Pkt], verdict: Verdict,
                   *, max_failures: int = 10, measurements: dict | None = None) -> str:
    """The terminal view of a run: packets, measurements, failures, verdict."""
    out = [f"{scenario.filename} — {scenario.lesson}" if scenario.lesson else scenario.filename]
    if len(verdict.clients) > 1:
        ends = ", ".join(f"{c} (connection {i})" for i, c in enumerate(verdict.clients, 1))
        out.append(f"clients {ends}; server {verdict.server}; seq/ack relative to each "
                   "connection, times from the first packet")
    elif verdict.client:
        out.append(f"client {verdict.client}, server {verdict.server}; "
                   "seq/ack relative, times from the first packet")
    out += [_packet_line(p, verdict) for p in packets]
    if not packets:
        out.append("(no packets captured)")
    for key, what in (("states", ", ".join(f"{a} => {b}" for a, b in scenario.states)),
                      ("counters", ", ".join(str(c) for c in scenario.counters)),
                      ("hold", f"the client still held after {scenario.hold:g} s"
                       if scenario.hold is not None else "")):
        if what:
            bad = any(f.startswith(f"{scenario.filename}: {key}:") for f in verdict.failures)
            out.append(f"{'✗' if bad else '✓'} {key}: {what}")
    for m in scenario.measures:
        value = (measurements or {}).get(m.name)
        shown = f"{value * 1000:.1f} ms" if value is not None else "not measured (a line failed)"
        out.append(f"measured: {m.name} = {shown}  ({m.text})")
    for f in verdict.failures[:max_failures]:
        out.append(f"  ✗ {f}")
    if len(verdict.failures) > max_failures:
        out.append(f"  ... and {len(verdict.failures) - max_failures} more (see result.json)")
    for i, c in enumerate(verdict.connections, 1):
        out.append(f"connection {i} ({c.client}): {'PASS' if c.ok else 'FAIL'} {c.reason}")
    out.append(("PASS " if verdict.ok else "FAIL ") + verdict.reason)
    return "\n".join(out)


def _packet_record(p: Pkt, verdict: Verdict) -> dict:
    return {"number": p.number, "time": round(p.time, 6), "epoch": p.epoch,
            "direction": _direction(p, verdict).strip() or None,
            "src": f"{p.src}.{p.sport}", "dst": f"{p.dst}.{p.dport}",
            "flags": p.flags_str, "seq": p.seq, "ack": p.ack, "seq_raw": p.seq_raw,
            "ack_raw": p.ack_raw, "length": p.length, "window": p.window,
            "window_calc": p.window_calc, "options": format_options(p.options),
            "payload": c_escape(p.payload), "ip_id": p.ip_id, "ttl": p.ttl,
            "checksums": {"ip": p.ip_checksum_ok, "tcp": p.tcp_checksum_ok,
                          "tshark_ip": p.ip_checksum, "tshark_tcp": p.tcp_checksum},
            "analysis": sorted(p.analysis), "ok": p.number not in verdict.bad_packets,
            "notes": verdict.notes.get(p.number, []), "tcpdump": p.tcpdump_line()}


def _timings(packets: list[Pkt], verdict: Verdict) -> dict:
    conv = [p for p in packets if _direction(p, verdict).strip()]
    if not conv:
        return {"packets": 0}
    out = {"packets": len(conv), "first_epoch": conv[0].epoch,
           "duration_s": round(conv[-1].epoch - conv[0].epoch, 6)}
    syn = next((p for p in conv if p.flags_str == "S"), None)
    synack = next((p for p in conv if p.flags_str == "S."), None)
    if syn and synack:
        out["synack_after_syn_s"] = round(synack.epoch - syn.epoch, 6)
    return out


def result_dict(scenario: Scenario, packets: list[Pkt], verdict: Verdict,
                extra: dict | None = None) -> dict:
    """Everything ``result.json`` holds, as a dict."""
    times = {p.number: p.time for p in packets}
    lines = []
    for r in verdict.lines:
        d = r.to_dict()
        if r.line.timing is not None:
            ref = verdict.lines[r.line.timing.ref].packet
            if ref in times and r.packet in times:
                d["after_ref_s"] = round(times[r.packet] - times[ref], 6)
        lines.append(d)
    return {
        "scenario": {"name": scenario.name, "path": scenario.path, "lesson": scenario.lesson,
                     "responder": list(scenario.responder_args), "client":
                     [scenario.client, *scenario.client_args],
                     "stdin": c_escape(scenario.stdin), "conditions": scenario.conditions,
                     "timeout": scenario.timeout, "trailing": scenario.trailing,
                     "clients": scenario.clients},
        "ok": verdict.ok,
        "verdict": "pass" if verdict.ok else "fail",
        "reason": verdict.reason,
        "failures": list(verdict.failures),
        "client": verdict.client, "server": verdict.server,
        "lines": lines,
        "connections": verdict.to_dict()["connections"],
        "packets": [_packet_record(p, verdict) for p in packets],
        "timings": _timings(packets, verdict),
        "versions": versions(),
        "run": extra or {},
    }


def _find_pcap(run_dir: Path, extra: dict) -> Path | None:
    if extra.get("pcap"):
        return Path(extra["pcap"])
    found = sorted(run_dir.glob("*.pcapng")) + sorted(run_dir.glob("*.pcap"))
    return found[0] if found else None


def write_run(run_dir, scenario: Scenario, packets: list[Pkt], verdict: Verdict,
              extra: dict | None = None) -> dict:
    """Write ``transcript.txt`` and ``result.json`` into ``run_dir``; returns their paths.

    The capture is ``extra["pcap"]`` or the first ``*.pcapng``/``*.pcap`` in ``run_dir``.  If
    tcpdump is missing or fails, the transcript says so (and result.json records it) rather
    than the run losing its verdict.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    pcap = _find_pcap(run_dir, extra)
    head = [f"# {scenario.filename}: {'PASS' if verdict.ok else 'FAIL'} — {verdict.reason}"]
    problem = None
    if pcap is None:
        problem = "no capture file in the run folder"
        body = ""
    else:
        head.append(f"# tcpdump {' '.join(TCPDUMP_ARGS)} -r {pcap.name} tcp")
        try:
            body = tcpdump_transcript(pcap)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            problem, body = str(exc), ""
    if any(not p.tcp_checksum_ok for p in packets
           if f"{p.src}.{p.sport}" == verdict.client):
        head.append("# note: the client's packets are captured before the host computes their "
                    "checksum (checksum offload); tcpdump calls those \"incorrect\"")
    if problem:
        head.append(f"# no transcript: {problem}")
        extra["transcript_error"] = problem
    transcript = run_dir / TRANSCRIPT
    transcript.write_text("\n".join(head) + "\n" + body)
    result = run_dir / RESULT
    data = result_dict(scenario, packets, verdict, extra)
    if pcap is not None:
        data["pcap"] = str(pcap)
    result.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    return {"transcript": transcript, "result": result}
