"""``invoke demo``: one scenario, run for real on a lab, checked packet by packet.

Data flow (design.md): make sure the lab is up and provisioned -> start the responder in the VM
over SSH (paramiko) -> start a capture on the host side's ``vboxnet0`` and prove it live with a
canary datagram -> run the real ``nc`` on the host side -> stop the capture and the responder ->
dissect the pcapng with pyshark -> match it against the scenario's expected exchange -> write
``runs/<time>-<scenario>/`` (pcapng, transcript, ladder.svg, result.json) -> verdict.

The client is the scenario's (``nc``, the Python socket client or the Scapy peer, see
:mod:`harness.run.clients`); its lab conditions (:mod:`harness.conditions`) are in force in the VM
while it runs; after the packets, the responder's logged states, its counters and the client's
``hold`` are checked too (:func:`harness.match.check_run`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.run.capture import Capture
from harness.run.clients import ClientRun, client_argv, run_client
from harness.run.conditions import Conditions
from harness.judge.dissect import read_pcap
from harness.report.ladder import write_ladder
from harness.lab import LAB_PORT, Backend
from harness.judge.match import check_run, match, measurements, renumber
from harness.lab.provision import bring_up
from harness.report.runfiles import format_summary, write_run
from harness.judge.scenario import ScenarioError, list_scenarios, load_scenario, scenario_path
from harness.run.responder import CANARY_PORT, TcplabResponder, canary, responder_counters
from harness.run.ssh import LabSSH
from harness.util import PROJECT_ROOT, LabError, progress

RUNS_DIR = PROJECT_ROOT / "runs"


@dataclass
class DemoResult:
    scenario: str
    ok: bool
    reason: str
    run_dir: Path
    client_output: bytes = b""
    summary: str = ""
    counters: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    measurements: dict = field(default_factory=dict)
    verdict: object = None


def _load(name: str):
    """The scenario called ``name`` (or at path ``name``); a bad one is a LabError naming the
    file, line and field."""
    p = scenario_path(name)
    if not p.exists():
        raise LabError(f"no scenario {name!r} (no {p}); known scenarios: "
                       f"{', '.join(list_scenarios())}")
    try:
        return load_scenario(p)
    except ScenarioError as e:
        raise LabError(f"bad scenario: {e}") from e


def run_demo(backend: Backend, scenario_name: str = "hello", *, fault: str | None = None,
             runs_dir: Path = RUNS_DIR, verbose: bool = False,
             client_timeout: float = 30.0, responder: str | None = None,
             launcher=None) -> DemoResult:
    """Run one scenario on ``backend`` and return its verdict (never raises on a mismatch;
    raises LabError when the lab itself fails).  ``responder`` replaces the scenario's
    responder arguments (to show that a check fails on a responder that behaves otherwise);
    ``launcher`` replaces tcplab's responder altogether (harness.run.responder: e.g. a
    student's submission)."""
    scn = _load(scenario_name)
    responder_args = shlex.split(responder) if responder is not None else list(scn.responder_args)
    if scn.timeout:
        client_timeout = scn.timeout
    timings = bring_up(backend, verbose=verbose)["timings"]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / f"{stamp}-{scn.name}{'-fault-' + fault if fault else ''}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = run_dir.with_name(f"{run_dir.name.split('~')[0]}~{n}")
    run_dir.mkdir(parents=True)
    pcap = run_dir / "capture.pcapng"

    args = [*responder_args, *(["--fault", fault] if fault else [])]
    if launcher is None:
        launcher = TcplabResponder(args)
    argv = launcher.argv(backend)
    cargv = client_argv(backend, scn, LAB_PORT)

    t0 = time.monotonic()
    ssh = LabSSH(backend.ssh_endpoint())
    responder = capture = None
    client = ClientRun(cargv)
    counters: dict = {}
    try:
        progress(f"starting the {launcher.label} in the VM: {' '.join(argv[1:])}")
        responder = launcher.start(ssh, backend)
        timings["responder_start_s"] = time.monotonic() - t0

        t1 = time.monotonic()
        capture = Capture(backend.host_exec_prefix(), backend.capture_interface, pcap,
                          f"tcp port {LAB_PORT} or udp port {CANARY_PORT}",
                          canary=canary(backend))
        capture.start()
        timings["capture_live_s"] = time.monotonic() - t1

        shown = cargv[len(backend.host_exec_prefix()):]
        progress(f"running the client on the host side: {' '.join(shown[:8])}"
                 f"{' ...' if len(shown) > 8 else ''}")
        t2 = time.monotonic()
        with Conditions(ssh, scn, backend.host_ip, LAB_PORT):
            client = run_client(backend, scn, LAB_PORT, client_timeout)
            timings["client_s"] = time.monotonic() - t2
            # Let the last ACKs of the close cross the wire before the capture stops (and the
            # responder's timers, e.g. TIME-WAIT, run out when the scenario lingers).
            time.sleep(max(0.3, scn.linger))
    finally:
        if capture is not None:
            capture.stop()
        if responder is not None:
            status = launcher.stop(responder)
            counters = responder_counters(responder.stderr) if launcher.own_logs else {}
            counters["exit_status"] = status
            (run_dir / "responder.log").write_text(responder.stderr)
        ssh.close()
    timings["demo_s"] = time.monotonic() - t0

    packets = renumber(read_pcap(pcap, display_filter=f"tcp.port == {LAB_PORT}"),
                       backend.host_ip, backend.vm_ip, LAB_PORT)
    verdict = match(scn, packets, client_ip=backend.host_ip, server_ip=backend.vm_ip,
                    server_port=LAB_PORT)
    log_text = (run_dir / "responder.log").read_text() if (run_dir / "responder.log").exists() \
        else ""
    check_run(scn, verdict, responder_log=log_text, counters=counters, held=client.held,
              own_logs=launcher.own_logs)
    measured = measurements(scn, verdict)
    ok, reason = verdict.ok, verdict.reason
    client_rc, client_err = client.status, client.stderr
    if ok and not (client_rc == 0 or (scn.hold is not None and client.held)):
        ok, reason = False, f"the client {scn.client} did not exit cleanly (status {client_rc}): " \
                            f"{client_err.decode(errors='replace').strip()[-500:]}"
    if ok and client.report is not None and not client.report.get("ok"):
        ok, reason = False, f"the {scn.client} client failed: {client.report.get('error')}"
    if ok and launcher.own_logs and counters.get("exit_status") not in (0,):
        ok, reason = False, (f"the responder exited {counters.get('exit_status')} on SIGTERM "
                             f"(expected 0); see {run_dir / 'responder.log'}")
    client_out = client.received
    (run_dir / "client.out").write_bytes(client_out)
    if not ok and reason not in verdict.failures:
        verdict.failures.append(reason)
    verdict.ok, verdict.reason = ok, reason
    extra = {"backend": backend.name, "prefix": backend.prefix, "fault": fault,
             "responder_argv": argv, "client_argv": cargv, "client_status": client_rc,
             "client_held": client.held, "client_report": client.report,
             "client_stderr": client_err.decode(errors="replace"), "counters": counters,
             "measurements": measured, "timings": timings, "ok": ok, "reason": reason}
    write_run(run_dir, scn, packets, verdict, extra)
    write_ladder(run_dir / "ladder.svg", packets, verdict,
                 f"{scn.filename} — {scn.lesson}" if scn.lesson else scn.filename)
    summary = format_summary(scn, packets, verdict, measurements=measured)
    return DemoResult(scn.name, ok, reason, run_dir, client_out, summary, counters, timings,
                      measured, verdict)
