"""``invoke demo``: one scenario, run for real on a lab, checked packet by packet.

Data flow (design.md): make sure the lab is up and provisioned -> start the responder in the VM
over SSH (paramiko) -> start a capture on the host side's ``vboxnet0`` and prove it live with a
canary datagram -> run the real ``nc`` on the host side -> stop the capture and the responder ->
dissect the pcapng with pyshark -> match it against the scenario's expected exchange -> write
``runs/<time>-<lab>-<scenario>/`` (pcapng, transcript, ladder.svg, result.json) -> verdict.

:func:`run_demo` is those steps in order, each a function of its own: :func:`prepare` (load and
check everything, make the run folder), :func:`exchange` (responder, capture, conditions,
clients; everything stopped in ``finally``), :func:`judge` (dissect, match, the run-level
checks), :func:`write_artefacts`.  The client is the scenario's (``nc``, the Python socket
client or the Scapy peer, see :mod:`harness.run.clients`), ``clients: N`` copies of it at once;
its lab conditions (:mod:`harness.run.conditions`) are in force in the VM while it runs.

Every run has one overall deadline (:class:`Deadline`): the client's limit (``hold`` or
``timeout``) plus ``linger`` plus :data:`SETUP_BUDGET_S`; every wait of the run is bounded by
what is left of it, and the capture's watchdog is the deadline itself.  Run folders never
collide: the name has the lab prefix and a microsecond clock, and the folder is made with an
atomic ``mkdir`` (a counter is appended when the name is taken), so any number of concurrent
demos get folders of their own.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.judge.dissect import read_pcap
from harness.judge.match import check_run, match, measurements, renumber
from harness.judge.scenario import (MAX_SECONDS, Scenario, ScenarioError, list_scenarios,
                                    load_scenario, responder_args, scenario_path)
from harness.lab import LAB_PORT, Backend
from harness.lab.provision import bring_up
from harness.report.ladder import write_ladder
from harness.report.runfiles import format_summary, write_run
from harness.run.capture import Capture
from harness.run.clients import client_argv, run_clients, scapy_unavailable
from harness.run.conditions import Conditions
from harness.run.responder import CANARY_PORT, TcplabResponder, canary, responder_counters
from harness.run.ssh import LabSSH
from harness.util import PROJECT_ROOT, LabError, progress
from responder.contract import FAULTS

RUNS_DIR = PROJECT_ROOT / "runs"
#: What a run needs beyond its client's time: responder start (15 s at most), capture start
#: (10 s), stopping both, dissection and the artefacts.
SETUP_BUDGET_S = 90.0
#: The client's limit when the scenario gives no ``timeout``.
DEFAULT_CLIENT_TIMEOUT_S = 30.0


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
    clients: list = field(default_factory=list)       # ClientRun per client, in start order


class Deadline:
    """One overall deadline for a run: ``left()`` bounds every wait."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


@dataclass
class Run:
    """One run's inputs, and what it produced so far (filled in step by step)."""

    backend: Backend
    scn: Scenario
    launcher: object
    run_dir: Path
    fault: str | None
    client_limit: float
    deadline: Deadline
    timings: dict
    argv: list = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    clients: list = field(default_factory=list)
    packets: list = field(default_factory=list)
    verdict: object = None
    measured: dict = field(default_factory=dict)

    @property
    def pcap(self) -> Path:
        return self.run_dir / "capture.pcapng"


# ----------------------------------------------------------------------------- preparing

def load(name: str) -> Scenario:
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


def check_fault(fault: str | None) -> None:
    """``--fault`` is one of the responder's (responder.contract.FAULTS), checked on the host
    before anything runs."""
    if fault is not None and fault not in FAULTS:
        raise LabError(f"unknown fault {fault[:60]!r}: choose one of {', '.join(FAULTS)}")


def skip_reason(scn: Scenario, backend: Backend) -> str | None:
    """Why ``scn`` does not apply to ``backend`` (None: it does).  A skipped lesson is not a
    failure: the scenario says it holds elsewhere, or the backend cannot drive its client (the
    Scapy peer on a host side that is this machine, where the harness is not root on Linux)."""
    if not scn.runs_on(backend.name):
        return f"for {', '.join(scn.backends)} only (backends: in {scn.filename})"
    if scn.client == "scapy":
        return scapy_unavailable(backend)
    return None


def _safe(text: str) -> str:
    """``text`` as part of a folder name: letters, digits, '.', '_', '-' only, 60 at most."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


def new_run_dir(runs_dir: Path, prefix: str, name: str, fault: str | None = None) -> Path:
    """A fresh folder ``runs_dir/<UTC time to the microsecond>-<prefix>-<name>[-fault-F]``
    (``~2``, ``~3`` ... when taken), made atomically: never shared with another run, never
    outside ``runs_dir``."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
    base = f"{stamp}-{_safe(prefix)}-{_safe(name)}" + (f"-fault-{_safe(fault)}" if fault else "")
    for n in range(1, 10_000):
        d = runs_dir / (base if n == 1 else f"{base}~{n}")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        return d
    raise LabError(f"no free run folder named {base}~N in {runs_dir}")


def prepare(backend: Backend, scenario_name: str, *, fault, runs_dir, verbose, client_timeout,
            responder, launcher) -> Run:
    """Everything checked before the lab is touched; then the lab up and the run folder made."""
    scn = load(scenario_name)
    check_fault(fault)
    if launcher is None:
        try:
            args = list(responder_args(responder)[0]) if responder is not None \
                else list(scn.responder_args)
        except ValueError as e:
            raise LabError(f"bad responder arguments {responder!r}: {e}") from None
        launcher = TcplabResponder([*args, *(["--fault", fault] if fault else [])])
    limit = scn.hold if scn.hold is not None else \
        (scn.timeout if scn.timeout is not None else client_timeout)
    limit = min(limit, MAX_SECONDS)
    deadline = Deadline(limit + scn.linger + SETUP_BUDGET_S)
    timings = bring_up(backend, verbose=verbose)["timings"]
    run_dir = new_run_dir(runs_dir, backend.prefix, scn.name, fault)
    return Run(backend, scn, launcher, run_dir, fault, limit, deadline, timings)


# ----------------------------------------------------------------------------- the exchange

def exchange(run: Run) -> None:
    """Responder up, capture live, conditions in force, the clients run; then everything
    stopped (also on failure) and the responder's log and counters kept."""
    b, launcher = run.backend, run.launcher
    run.argv = launcher.argv(b)
    t0 = time.monotonic()
    ssh = LabSSH(b.ssh_endpoint())
    proc = capture = None
    try:
        progress(f"starting the {launcher.label} in the VM: {launcher.describe(b)}")
        proc = launcher.start(ssh, b)
        run.timings["responder_start_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        capture = Capture(b.host_argv, b.capture_interface, run.pcap,
                          f"tcp port {LAB_PORT} or udp port {CANARY_PORT}", canary=canary(b),
                          watchdog_s=run.deadline.left())
        capture.start()
        run.timings["capture_live_s"] = time.monotonic() - t1
        _run_clients(run, ssh)
    finally:
        if capture is not None:
            capture.stop()
        if proc is not None:
            status = launcher.stop(proc)
            run.counters = responder_counters(proc.stderr) if launcher.own_logs else {}
            run.counters["exit_status"] = status
            (run.run_dir / "responder.log").write_text(proc.stderr)
        ssh.close()
    run.timings["demo_s"] = time.monotonic() - t0


def _run_clients(run: Run, ssh: LabSSH) -> None:
    b, scn = run.backend, run.scn
    shown = client_argv(b, scn, LAB_PORT, wrapped=False)
    copies = f"{scn.clients} copies of " if scn.clients > 1 else ""
    progress(f"running {copies}the client on the host side: {' '.join(shown[:8])}"
             f"{' ...' if len(shown) > 8 else ''}")
    t2 = time.monotonic()
    with Conditions(ssh, scn, b.host_ip, LAB_PORT):
        limit = min(run.client_limit, run.deadline.left())
        run.clients = run_clients(b, scn, LAB_PORT, limit)
        run.timings["client_s"] = time.monotonic() - t2
        # Let the last ACKs of the close cross the wire before the capture stops (and the
        # responder's timers, e.g. TIME-WAIT, run out when the scenario lingers).
        time.sleep(min(max(0.3, scn.linger), run.deadline.left()))


# ----------------------------------------------------------------------------- judging

def judge(run: Run) -> None:
    """Dissect the capture, match it, then the run-level checks: states, counters, hold, the
    clients' exit, the responder's exit."""
    b, scn = run.backend, run.scn
    run.packets = renumber(read_pcap(run.pcap, display_filter=f"tcp.port == {LAB_PORT}"),
                           b.host_ip, b.vm_ip, LAB_PORT)
    verdict = match(scn, run.packets, client_ip=b.host_ip, server_ip=b.vm_ip,
                    server_port=LAB_PORT)
    log = run.run_dir / "responder.log"
    held = all(c.held for c in run.clients) if run.clients else None
    check_run(scn, verdict, responder_log=log.read_text() if log.exists() else "",
              counters=run.counters, held=held, own_logs=run.launcher.own_logs)
    run.measured = measurements(scn, verdict)
    reason = _client_problem(run) or _responder_problem(run)
    if verdict.ok and reason:
        verdict.ok, verdict.reason = False, reason
        if reason not in verdict.failures:
            verdict.failures.append(reason)
    run.verdict = verdict


def _client_problem(run: Run) -> str | None:
    scn = run.scn
    for i, client in enumerate(run.clients, 1):
        who = f"the client {scn.client}" + (f" #{i}" if len(run.clients) > 1 else "")
        if not (client.status == 0 or (scn.hold is not None and client.held)):
            err = client.stderr.decode(errors="replace").strip()[-500:]
            return f"{who} did not exit cleanly (status {client.status}): {err}"
        if client.report is not None and not client.report.get("ok"):
            return f"{who} failed: {client.report.get('error')}"
    return None


def _responder_problem(run: Run) -> str | None:
    status = run.counters.get("exit_status")
    if run.launcher.own_logs and status not in (0,):
        return (f"the responder exited {status} on SIGTERM (expected 0); see "
                f"{run.run_dir / 'responder.log'}")
    return None


# ----------------------------------------------------------------------------- artefacts

def write_artefacts(run: Run) -> DemoResult:
    """client output, transcript.txt, result.json, ladder.svg; the summary; the result."""
    scn, verdict, b = run.scn, run.verdict, run.backend
    outputs = [c.received for c in run.clients]
    if len(outputs) == 1:
        (run.run_dir / "client.out").write_bytes(outputs[0])
    for i, out in enumerate(outputs if len(outputs) > 1 else (), 1):
        (run.run_dir / f"client-{i}.out").write_bytes(out)
    first = run.clients[0] if run.clients else None
    extra = {"backend": b.name, "prefix": b.prefix, "fault": run.fault,
             "responder_argv": run.argv,
             "client_argv": first.argv if first else client_argv(b, scn, LAB_PORT),
             "client_status": first.status if first else None,
             "client_held": first.held if first else None,
             "client_report": first.report if first else None,
             "client_stderr": first.stderr.decode(errors="replace") if first else "",
             "clients": [c.to_dict() for c in run.clients],
             "counters": run.counters, "measurements": run.measured, "timings": run.timings,
             "deadline_s": round(run.deadline.seconds, 3), "ok": verdict.ok,
             "reason": verdict.reason}
    write_run(run.run_dir, scn, run.packets, verdict, extra)
    write_ladder(run.run_dir / "ladder.svg", run.packets, verdict,
                 f"{scn.filename} — {scn.lesson}" if scn.lesson else scn.filename)
    summary = format_summary(scn, run.packets, verdict, measurements=run.measured)
    return DemoResult(scn.name, verdict.ok, verdict.reason, run.run_dir,
                      outputs[0] if outputs else b"", summary, run.counters, run.timings,
                      run.measured, verdict, run.clients)


def run_demo(backend: Backend, scenario_name: str = "hello", *, fault: str | None = None,
             runs_dir: Path = RUNS_DIR, verbose: bool = False,
             client_timeout: float = DEFAULT_CLIENT_TIMEOUT_S, responder: str | None = None,
             launcher=None) -> DemoResult:
    """Run one scenario on ``backend`` and return its verdict (never raises on a mismatch;
    raises LabError when the lab itself fails, or for a bad scenario, fault or responder).
    ``responder`` replaces the scenario's responder arguments (to show that a check fails on a
    responder that behaves otherwise); ``launcher`` replaces tcplab's responder altogether
    (harness.run.responder: e.g. a student's submission)."""
    run = prepare(backend, scenario_name, fault=fault, runs_dir=runs_dir, verbose=verbose,
                  client_timeout=client_timeout, responder=responder, launcher=launcher)
    exchange(run)
    judge(run)
    return write_artefacts(run)

