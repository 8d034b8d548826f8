"""What answers in the lab VM during a run: tcplab's own responder, or someone else's program.

A run (:func:`harness.run.demo.run_demo`) does not care which: it asks a *launcher* to start the
program in the VM, runs the client and the capture, then asks the launcher to stop it.  A
launcher has ``label`` (what it is, for messages), ``own_logs`` (does the program write
tcplab's log?), ``argv(backend)`` (the whole command line, kept in ``result.json``),
``describe(backend)`` (one short line for progress), ``start(ssh, backend)`` and
``stop(proc)``.  Two kinds exist:

* :class:`TcplabResponder` -- ``python3 -m responder --listen VM:80 ARGS`` from the provisioned
  tree (``pypy3`` instead with ``python="/usr/bin/pypy3"`` or ``$TCPLAB_RUNTIME=pypy``); ready when it prints ``listening on``; its stderr carries tcplab's transition log and
  exit counters, so a scenario's ``states:`` and ``counters:`` checks apply;
* a submission's launcher (``harness.grade``): a student's program, ready when its raw socket
  shows up, stopped with SIGTERM then SIGKILL; it logs nothing tcplab can read
  (``own_logs = False``), so ``states:``/``counters:`` checks are *n/a*, never passed.

Also here: reading the responder's counters line, and the capture canary.
"""

from __future__ import annotations

import json
import os
import subprocess

from harness.lab.base import LAB_PORT, Backend
from harness.run.ssh import LabSSH, RemoteProcess
from harness.util import LabError
from responder.contract import READY_LINE, RUNTIMES

#: The UDP port the capture canary is sent to (nothing listens; the capture sees it).
CANARY_PORT = 9
RESPONDER_PYTHON = RUNTIMES["cpython"]
#: The environment variable that picks the responder's runtime (``cpython`` or ``pypy``) for
#: every run that does not name an interpreter: ``invoke up/demo --runtime`` set it, and so can
#: a test session (``TCPLAB_RUNTIME=pypy pytest tests/e2e/test_scenarios.py``).
RUNTIME_ENV = "TCPLAB_RUNTIME"


def runtime_python(runtime: str | None = None) -> str:
    """The interpreter for ``runtime`` (default: ``$TCPLAB_RUNTIME``, else cpython)."""
    name = runtime or os.environ.get(RUNTIME_ENV) or "cpython"
    if name not in RUNTIMES:
        raise LabError(f"unknown responder runtime {name!r} (from --runtime or "
                       f"${RUNTIME_ENV}); choose from {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


class TcplabResponder:
    """tcplab's own responder with ``args`` (e.g. ``["--app", "hello"]``)."""

    own_logs = True

    def __init__(self, args, python: str | None = None):
        self.args = list(args)
        self.python = python or runtime_python()
        self.label = "tcplab responder"

    def argv(self, backend: Backend) -> list[str]:
        """``python3 -m responder --listen VM:80 ARGS`` as the VM runs it."""
        return [self.python, "-m", "responder", "--listen", f"{backend.vm_ip}:{LAB_PORT}",
                *self.args]

    def describe(self, backend: Backend) -> str:
        """For progress: ``python3 -m responder --listen ... ARGS`` (short as it is)."""
        return " ".join([os.path.basename(self.python), *self.argv(backend)[1:]])

    def start(self, ssh: LabSSH, backend: Backend) -> RemoteProcess:
        """Start it in the VM and wait until it says it listens; raises (LabError) with its
        stderr if it dies first, and never leaves one running that did not come up."""
        proc = ssh.start(self.argv(backend), cwd=backend.responder_dir())
        try:
            proc.wait_for_stderr("^" + READY_LINE, timeout=15)
        except BaseException:
            proc.stop()
            raise
        return proc

    def stop(self, proc: RemoteProcess) -> int:
        """SIGTERM (SIGKILL if it lingers); its exit status."""
        return proc.stop()


def responder_argv(backend: Backend, args) -> list[str]:
    """``python3 -m responder --listen VM:80 ARGS`` as the VM runs it."""
    return TcplabResponder(args).argv(backend)


def start_responder(ssh: LabSSH, backend: Backend, args) -> RemoteProcess:
    """Start tcplab's responder with ``args`` in the VM and wait until it listens."""
    return TcplabResponder(args).start(ssh, backend)


def responder_counters(stderr: str) -> dict:
    """The responder's last JSON counters line (printed on exit), or {}."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def canary(backend: Backend):
    """A function that sends one UDP datagram from the host side to the VM's CANARY_PORT: the
    proof that a capture is live (and, at its end, that it has caught up)."""
    cmd = backend.host_argv(["nc", "-u", "-w0", backend.vm_ip, str(CANARY_PORT)])

    def send():
        subprocess.run(cmd, input=b"tcplab capture canary\n", capture_output=True, timeout=5)
    return send
