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

import contextlib
import json
import shlex
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.grade.probe import agent_command
from harness.grade.sandbox import RUN_LIMITS, Limits, bwrap_argv, guest_argv
from harness.run.ssh import LabSSH, RemoteProcess
from harness.util import LabError

READY_TIMEOUT = 10.0     # seconds for the raw socket to appear
SETTLE = 0.1             # after it appears, before the lesson's client starts
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
        self._agent: Agent | None = None

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
        """Start the program and, beside it, the agent that watches it (two SSH sessions
        opened at once); return when its raw socket is there.  ProgramError if it ends or
        opens none first."""
        self.facts = RunFacts()
        t0 = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            agent = pool.submit(Agent, ssh)
            try:
                proc = ssh.start(self.argv(backend),
                                 cwd=None if self.uid is not None else self.workdir,
                                 label=self.label)
            except BaseException:
                with contextlib.suppress(Exception):
                    agent.result().close()
                raise
            try:
                self._agent = agent.result()
            except BaseException:
                proc.stop()
                raise
        try:
            self._wait_ready(proc)
        except BaseException:
            self.stop(proc)
            raise
        self.facts.ready_s = time.monotonic() - t0
        return proc

    def stop(self, proc: RemoteProcess) -> int:
        """SIGTERM to each of its processes, SIGKILL to what is left after GRACE (the agent
        does both in the VM); its exit status.  What happened goes into :attr:`facts`."""
        f = self.facts
        try:
            if not proc.running():
                f.exited = proc.exit_status()
                return f.exited
            res = self._agent.ask("stop", proc.pid, GRACE, int(self.uid is None),
                                  timeout=GRACE + 10)
            if res["ended"]:                # before sshd told us: it ended by itself
                proc.wait(5)
                f.exited = proc.exit_status()
                return f.exited
            f.processes, f.killed = res["processes"], res["killed"]
            proc.wait(1)                    # (sshd reports the exit a moment after it)
            f.stopped_status = proc.stop(timeout=1)
            return f.stopped_status
        finally:
            if self._agent is not None:
                self._agent.close()
                self._agent = None
            out = proc.stdout
            f.stdout = out.split("\n", 1)[1] if "\n" in out else ""   # line 1: the PID
            f.stderr = proc.stderr

    # --- helpers ----------------------------------------------------------------------------
    def _wait_ready(self, proc: RemoteProcess) -> None:
        res = self._agent.ask("ready", proc.pid, READY_TIMEOUT, timeout=READY_TIMEOUT + 10)
        if res["ready"]:
            time.sleep(SETTLE)
            return
        if res["gone"]:
            proc.wait(5)                    # (sshd reports the exit a moment after it)
            tail = stderr_tail(proc.stderr)
            raise ProgramError(f"it {describe_status(proc.exit_status())} before opening a raw "
                               f"socket" + (f": {tail}" if tail else " (no output)"))
        raise ProgramError(f"it opened no raw socket within {READY_TIMEOUT:g} s (a responder "
                           f"must open one at start: AF_INET/SOCK_RAW or AF_PACKET)")


class Agent:
    """The probe's agent (:mod:`harness.grade.probe`) in the VM for one lesson: questions on
    its stdin, one JSON answer each on its stdout."""

    def __init__(self, ssh: LabSSH):
        self.proc = ssh.start(agent_command(), label="the grader's probe agent")
        self.asked = 0

    def ask(self, *words, timeout: float) -> dict:
        self.asked += 1
        n = self.asked
        self.proc.send(" ".join(str(w) for w in (n, *words)) + "\n")
        line = self.proc.wait_for_stdout(rf'^\{{.*"n": {n}\}}$', timeout).group(0)
        return json.loads(line)

    def close(self) -> None:
        """End its stdin: it exits by itself (and with the SSH connection at the latest)."""
        if self.proc.running():
            self.proc.close_stdin()


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
