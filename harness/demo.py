"""``invoke demo``: one scenario, run for real on a lab, checked packet by packet.

Data flow (design.md): make sure the lab is up and provisioned -> start the responder in the VM
over SSH (paramiko) -> start a capture on the host side's ``vboxnet0`` and prove it live with a
canary datagram -> run the real ``nc`` on the host side -> stop the capture and the responder ->
dissect the pcapng with pyshark -> match it against the scenario's expected exchange -> write
``runs/<time>-<scenario>/`` (pcapng, transcript, result.json) -> verdict.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .capture import Capture
from .dissect import read_pcap
from .lab import LAB_PORT, Backend
from .match import match
from .provision import bring_up
from .report import format_summary, write_run
from .scenario import ScenarioError, list_scenarios, load_scenario, scenario_path
from .ssh import LabSSH
from .util import PROJECT_ROOT, LabError, progress

RUNS_DIR = PROJECT_ROOT / "runs"
CANARY_PORT = 9
RESPONDER_PYTHON = "/usr/bin/python3"


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


def _canary(backend: Backend):
    """Send one UDP datagram from the host side to the VM: proof that the capture is live."""
    cmd = backend.host_exec_prefix() + ["nc", "-u", "-w0", backend.vm_ip, str(CANARY_PORT)]

    def send():
        subprocess.run(cmd, input=b"tcplab capture canary\n", capture_output=True, timeout=5)
    return send


def run_demo(backend: Backend, scenario_name: str = "hello", *, fault: str | None = None,
             runs_dir: Path = RUNS_DIR, verbose: bool = False,
             client_timeout: float = 30.0) -> DemoResult:
    """Run one scenario on ``backend`` and return its verdict (never raises on a mismatch;
    raises LabError when the lab itself fails)."""
    scn = _load(scenario_name)
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

    argv = [RESPONDER_PYTHON, "-m", "responder", "--listen", f"{backend.vm_ip}:{LAB_PORT}",
            *shlex.split(scn.responder)]
    if fault:
        argv += ["--fault", fault]
    client_argv = backend.host_exec_prefix() + [scn.client, *scn.client_args, backend.vm_ip,
                                                 str(LAB_PORT)]

    t0 = time.monotonic()
    ssh = LabSSH(backend.ssh_endpoint())
    responder = capture = None
    client_out, client_err, client_rc = b"", b"", None
    counters: dict = {}
    try:
        progress(f"starting the responder in the VM: {' '.join(argv[1:])}")
        responder = ssh.start(argv, cwd=backend.responder_dir())
        responder.wait_for_stderr(r"^listening on ", timeout=15)
        timings["responder_start_s"] = time.monotonic() - t0

        t1 = time.monotonic()
        capture = Capture(backend.host_exec_prefix(), backend.capture_interface, pcap,
                          f"tcp port {LAB_PORT} or udp port {CANARY_PORT}",
                          canary=_canary(backend))
        capture.start()
        timings["capture_live_s"] = time.monotonic() - t1

        progress(f"running the client on the host side: {' '.join(client_argv[len(backend.host_exec_prefix()):])}")
        t2 = time.monotonic()
        try:
            res = subprocess.run(client_argv, input=scn.stdin, capture_output=True,
                                 timeout=client_timeout)
            client_out, client_err, client_rc = res.stdout, res.stderr, res.returncode
        except subprocess.TimeoutExpired as e:
            client_out = e.stdout or b""
            client_err = (e.stderr or b"") + (
                f"\ntcplab: the client did not finish within {client_timeout:g} s (the responder never "
                f"closed the connection?); it was stopped".encode())
            client_rc = None
        timings["client_s"] = time.monotonic() - t2
        # Let the last ACKs of the close cross the wire before the capture stops.
        time.sleep(0.3)
    finally:
        if capture is not None:
            capture.stop()
        if responder is not None:
            status = responder.stop()
            counters = _counters(responder.stderr)
            counters["exit_status"] = status
            (run_dir / "responder.log").write_text(responder.stderr)
        ssh.close()
    timings["demo_s"] = time.monotonic() - t0

    packets = read_pcap(pcap, display_filter=f"tcp.port == {LAB_PORT}")
    verdict = match(scn, packets, client_ip=backend.host_ip, server_ip=backend.vm_ip,
                    server_port=LAB_PORT)
    ok, reason = verdict.ok, verdict.reason
    if ok and client_rc not in (0,):
        ok, reason = False, f"the client nc did not exit cleanly (status {client_rc}): " \
                            f"{client_err.decode(errors='replace').strip()}"
    if ok and counters.get("exit_status") not in (0,):
        ok, reason = False, (f"the responder exited {counters.get('exit_status')} on SIGTERM "
                             f"(expected 0); see {run_dir / 'responder.log'}")
    (run_dir / "client.out").write_bytes(client_out)
    extra = {"backend": backend.name, "prefix": backend.prefix, "fault": fault,
             "responder_argv": argv, "client_argv": client_argv, "client_status": client_rc,
             "client_stderr": client_err.decode(errors="replace"), "counters": counters,
             "timings": timings, "ok": ok, "reason": reason}
    write_run(run_dir, scn, packets, verdict, extra)
    summary = format_summary(scn, packets, verdict)
    return DemoResult(scn.name, ok, reason, run_dir, client_out, summary, counters, timings)


def _counters(stderr: str) -> dict:
    """The responder's last JSON counters line (printed on exit), or {}."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}
