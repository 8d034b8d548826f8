"""A submission as the program that answers in the lab VM: the launcher of
:mod:`harness.run.responder`'s protocol (``label``, ``own_logs``, ``argv``, ``describe``,
``start``, ``stop``), so :func:`harness.run.demo.run_demo` runs a lesson with it as with
tcplab's own.

* **started** over SSH in the VM, in the sandbox on netns (:mod:`harness.grade.sandbox`), as
  root under limits in a real guest; told nothing (no arguments, no environment of ours);
* **ready** when one of its processes holds a raw socket (``AF_INET``/``SOCK_RAW`` or
  ``AF_PACKET``), seen from the outside (:mod:`harness.grade.probe`), within
  :data:`READY_TIMEOUT`; it need not print anything;
* **stopped** with SIGTERM to each of its processes, then, after :data:`GRACE`, SIGKILL to all
  of them (and the sandbox, whose PID namespace takes everything with it);
* what happened is kept in :attr:`SubmissionLauncher.facts` (:class:`RunFacts`): exited by
  itself (and how), ignored SIGTERM, how many processes it had, its stdout and stderr.

A program that dies or never opens a raw socket before it is ready raises
:class:`ProgramError` (a LabError: one line, with the end of its stderr).
"""

from __future__ import annotations

import json
import shlex
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from harness.grade.probe import probe_command
from harness.grade.sandbox import RUN_LIMITS, Limits, bwrap_argv, guest_argv
from harness.run.ssh import LabSSH, RemoteProcess
from harness.util import LabError

READY_TIMEOUT = 10.0     # seconds for the raw socket to appear
SETTLE = 0.2             # after it appears, before the lesson's client starts
GRACE = 2.0              # SIGTERM -> SIGKILL


class ProgramError(LabError):
    """The submission's program, not the lab, failed (it died, or opened no raw socket)."""


@dataclass
class RunFacts:
    """One run of the program (one lesson)."""

    ready_s: float | None = None
    exited: int | None = None     # its status, when it ended before the grader stopped it
    killed: bool = False          # still running GRACE seconds after SIGTERM
    processes: int = 0            # how many it had when the lesson ended
    stopped_status: int | None = None
    stdout: str = ""
    stderr: str = ""


def describe_status(status: int | None) -> str:
    """``exited with status 1`` / ``was killed by SIGSEGV`` (a sandbox reports 128+N)."""
    if status is None or status == -1:
        return "was killed by a signal"
    if 128 < status < 128 + 65:
        try:
            return f"was killed by {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return f"exited with status {status}"


def stderr_tail(text: str, n: int = 200) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][-n:] if lines else ""


class SubmissionLauncher:
    """Runs ``command`` (argv relative to its work directory) in the VM.  ``workdir``: on
    netns the host path bound into the sandbox; otherwise the guest's directory."""

    own_logs = False

    def __init__(self, command: list, workdir: str, *, sandbox_uid: int | None,
                 limits: Limits = RUN_LIMITS, label: str = "submission"):
        self.command = list(command)
        self.workdir = workdir
        self.uid = sandbox_uid          # None: a real guest, root there
        self.limits = limits
        self.label = label
        self.facts = RunFacts()

    # --- the launcher protocol -------------------------------------------------------------
    def argv(self, backend) -> list:
        if self.uid is not None:
            return bwrap_argv(self.workdir, self.uid, self.command, self.limits, raw=True,
                              network=True)
        return guest_argv(self.command, self.limits)

    def describe(self, backend) -> str:
        """For progress, instead of the sandbox's long command line (``argv`` is kept in the
        run's ``result.json``): ``./responder (sandbox: uid N, CAP_NET_RAW only, limits)``."""
        where = (f"sandbox: uid {self.uid}, CAP_NET_RAW only, limits" if self.uid is not None
                 else "root in the guest, limits")
        return f"{shlex.join(self.command)} ({where})"

    def start(self, ssh: LabSSH, backend) -> RemoteProcess:
        self.facts = RunFacts()
        t0 = time.monotonic()
        proc = ssh.start(self.argv(backend), cwd=None if self.uid is not None else self.workdir)
        try:
            self._wait_ready(ssh, proc)
        except BaseException:
            self.stop(proc)
            raise
        self.facts.ready_s = time.monotonic() - t0
        return proc

    def stop(self, proc: RemoteProcess) -> int:
        f = self.facts
        try:
            if not proc.running():
                f.exited = proc.exit_status()
                return f.exited
            tree = self._program(proc)
            f.processes = len(tree)
            self._signal(proc, "TERM")
            proc.wait(GRACE)
            if proc.running() or (self.uid is None and self._program(proc)):
                f.killed = proc.running()
                self._signal(proc, "KILL")
                if self.uid is None:
                    proc.ssh.run(f"kill -KILL -- -{proc.pid} "
                                 f"{' '.join(str(p) for p in tree)} 2>/dev/null; true")
            f.stopped_status = proc.stop(timeout=1)
            return f.stopped_status
        finally:
            out = proc.stdout
            f.stdout = out.split("\n", 1)[1] if "\n" in out else ""   # line 1: the PID
            f.stderr = proc.stderr

    # --- helpers ----------------------------------------------------------------------------
    def _probe(self, proc: RemoteProcess, command: str, *args: str) -> dict:
        res = proc.ssh.run(shlex.join(probe_command(command, proc.pid, *args)), timeout=15)
        return json.loads(res.stdout.strip().splitlines()[-1])

    def _program(self, proc: RemoteProcess) -> list:
        """PIDs of the program's live processes (not the sandbox's own)."""
        tree = self._probe(proc, "status")["tree"]
        return [p[0] for p in tree if p[3] != "bwrap" and p[4] not in ("Z", "X")]

    def _signal(self, proc: RemoteProcess, sig: str) -> None:
        self._probe(proc, "signal", sig)

    def _wait_ready(self, ssh: LabSSH, proc: RemoteProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if not proc.running():
                status = proc.exit_status()
                tail = stderr_tail(proc.stderr)
                raise ProgramError(f"it {describe_status(status)} before opening a raw socket"
                                   + (f": {tail}" if tail else " (no output)"))
            if self._probe(proc, "status")["raw"]:
                time.sleep(SETTLE)
                return
            if time.monotonic() > deadline:
                raise ProgramError(f"it opened no raw socket within {READY_TIMEOUT:g} s (a "
                                   f"responder must open one at start: AF_INET/SOCK_RAW or "
                                   f"AF_PACKET)")
            time.sleep(0.1)


def upload(ssh: LabSSH, local: Path, remote: str) -> None:
    """Copy the work directory ``local`` to ``remote`` in a real guest (SFTP), modes kept,
    symlinks as symlinks; ``remote`` is emptied first."""
    ssh.run(f"rm -rf {shlex.quote(remote)} && mkdir -p {shlex.quote(remote)}")
    sftp = ssh.client.open_sftp()
    try:
        for path in sorted(local.rglob("*")):
            dest = f"{remote}/{path.relative_to(local).as_posix()}"
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                sftp.symlink(str(Path(path).readlink()), dest)
            elif stat.S_ISDIR(st.st_mode):
                sftp.mkdir(dest, mode=stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                sftp.put(str(path), dest)
                sftp.chmod(dest, stat.S_IMODE(st.st_mode))
    finally:
        sftp.close()
