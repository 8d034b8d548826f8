"""SSH to the lab VM with paramiko: one connection class, the only module that imports paramiko.

In the spirit of Fabric's ``Connection``: it connects lazily, checks the host key strictly
against the lab's own known_hosts, and :meth:`LabSSH.run` raises :class:`RemoteError` (with the
remote stderr) on a non-zero exit.  :meth:`LabSSH.start` runs a long-lived remote process (the
responder) and gives a handle that waits for a line, stops it with a signal and collects its
exit status and output.
"""

from __future__ import annotations

import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass

import paramiko

from harness.lab import SshEndpoint
from harness.util import LabError


class RemoteError(LabError):
    """A remote command failed; the message carries its exit status and stderr tail."""


@dataclass
class RemoteResult:
    command: str
    status: int
    stdout: str
    stderr: str


class LabSSH:
    def __init__(self, endpoint: SshEndpoint, connect_timeout: float = 10.0):
        self.ep = endpoint
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None

    # --- connection -------------------------------------------------------------------------
    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        ep = self.ep
        client = paramiko.SSHClient()
        client.load_host_keys(str(ep.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = None
        if ep.proxy_command:
            cmd = ep.proxy_command.replace("%h", ep.host).replace("%p", str(ep.port))
            sock = paramiko.ProxyCommand(cmd)
        try:
            client.connect(ep.host, port=ep.port, username=ep.user, key_filename=str(ep.key_file),
                           sock=sock, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=False,
                           look_for_keys=False)
        except (paramiko.SSHException, OSError, socket.timeout) as e:
            client.close()
            if sock is not None:
                sock.close()
            raise LabError(f"cannot reach the lab VM over SSH at {ep.user}@{ep.host}:{ep.port} "
                           f"({type(e).__name__}: {e}); is the lab up? try `invoke up`") from e
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- commands ---------------------------------------------------------------------------
    def run(self, command: str, *, timeout: float = 60, check: bool = True) -> RemoteResult:
        """Run ``command`` in the VM's shell; raise RemoteError on non-zero exit when check."""
        _, out, err = self.client.exec_command(command, timeout=timeout)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        status = out.channel.recv_exit_status()
        res = RemoteResult(command, status, stdout, stderr)
        if check and status != 0:
            tail = (stderr.strip().splitlines() or [f"exit {status}"])[-1]
            raise RemoteError(f"in the lab VM, `{command}` exited {status}: {tail}")
        return res

    def start(self, argv: list[str], *, cwd: str | None = None,
              label: str | None = None) -> "RemoteProcess":
        """Start a long-lived process in the VM; returns a handle to watch, feed and stop it
        (``label`` names it in messages; default: its command line)."""
        inner = shlex.join(argv)
        if cwd:
            inner = f"cd {shlex.quote(cwd)} && exec {inner}"
        else:
            inner = f"exec {inner}"
        # The first stdout line is the PID, so the process can be signalled by a second command.
        chan = self.client.get_transport().open_session()
        chan.exec_command(f"sh -c {shlex.quote('echo $$; ' + inner)}")
        return RemoteProcess(self, chan, label or " ".join(argv))


class RemoteProcess:
    """A process running in the VM, started by :meth:`LabSSH.start`."""

    def __init__(self, ssh: LabSSH, chan: paramiko.Channel, label: str):
        self.ssh = ssh
        self.chan = chan
        self.label = label
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self.pid = self._read_pid()

    def _pump(self) -> None:
        chan = self.chan
        while True:
            got = False
            if chan.recv_ready():
                data = chan.recv(65536)
                with self._lock:
                    self._stdout += data
                got = True
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                with self._lock:
                    self._stderr += data
                got = True
            if not got:
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    return
                time.sleep(0.005)

    @property
    def stdout(self) -> str:
        with self._lock:
            return self._stdout.decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._stderr.decode(errors="replace")

    def _read_pid(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first, nl, _ = self.stdout.partition("\n")
            if nl:
                return int(first)
            time.sleep(0.01)
        raise RemoteError(f"{self.label}: no PID from the lab VM within {timeout:g} s")

    def running(self) -> bool:
        return not self.chan.exit_status_ready()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for it to end; has it?"""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.running()

    def exit_status(self, timeout: float = 2) -> int | None:
        """Its exit status once it has ended, after waiting up to ``timeout`` s for the last of
        its output to be read (so ``stdout``/``stderr`` are complete); None while it runs."""
        if self.running():
            return None
        self._reader.join(timeout)
        return self.chan.recv_exit_status()

    def wait_for_stderr(self, pattern: str, timeout: float) -> re.Match:
        """Wait for a stderr line matching ``pattern``; raise with its stderr if it dies."""
        return self._wait_for("stderr", pattern, timeout)

    def wait_for_stdout(self, pattern: str, timeout: float) -> re.Match:
        """Wait for a stdout line matching ``pattern``; raise with its stderr if it dies."""
        return self._wait_for("stdout", pattern, timeout)

    def _wait_for(self, stream: str, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(getattr(self, stream))
            if m:
                return m
            if not self.running():
                raise RemoteError(f"{self.label} exited {self.exit_status(1)} in the lab "
                                  f"VM: {self.stderr.strip() or '(no stderr)'}")
            if time.monotonic() > deadline:
                raise RemoteError(f"{self.label}: no {stream} line matching {pattern!r} within "
                                  f"{timeout:g} s; stderr so far: {self.stderr.strip()!r}")
            time.sleep(0.01)

    def send(self, text: str) -> None:
        """Write ``text`` to its stdin."""
        self.chan.sendall(text.encode())

    def close_stdin(self) -> None:
        """End its stdin (it reads EOF)."""
        self.chan.shutdown_write()

    def signal(self, sig: str) -> None:
        self.ssh.run(f"kill -{sig} {self.pid} 2>/dev/null || true", timeout=10)

    def stop(self, timeout: float = 5) -> int:
        """SIGTERM, wait for the exit status; SIGKILL if it does not go.  Returns the status."""
        if self.running():
            self.signal("TERM")
        self.wait(timeout)
        if self.running():
            self.signal("KILL")
            self.wait(2)
        status = self.exit_status(2)
        return -9 if status is None else status


def check_login(endpoint: SshEndpoint, timeout: float = 5.0) -> tuple[bool, str]:
    """Can the harness log in to the VM and run a command?  (ok, one-line detail)"""
    try:
        with LabSSH(endpoint, connect_timeout=timeout) as ssh:
            res = ssh.run("uname -sr", timeout=timeout)
        return True, res.stdout.strip()
    except LabError as e:
        return False, str(e)
