"""What runs on a lab host (``--hosts``, :mod:`harness.lab.remote`): tcplab's own netns labs,
made and removed there by the same code as on this machine, and the wrapper that ties every
host-side command of a run to the SSH session that started it.

The controller's Ansible role ``tcplab_labhost`` ships the harness's sources to the lab host and
runs, as root there (each prints one JSON object on stdout; progress goes to stderr)::

    python3 -m harness.lab.onhost up --keys - PREFIX...      # a harness.lab.netns lab each
    python3 -m harness.lab.onhost down PREFIX... | --all
    python3 -m harness.lab.onhost status

``up`` makes (or completes) each lab with :class:`harness.lab.netns.NetnsBackend`, exactly as
``invoke up`` does on this machine, with the SSH keys the controller made (``--keys -``: JSON
on stdin, so never in a file or on a command line: the lab sshd's host key pair, so the
controller's known_hosts is strict from the first connection, as the qemu backend's fw_cfg
does; and the only public key that may log in), and reports the lab's state directory,
responder directory and Ansible variables.  A lab that was not there before and cannot be
made is removed again.  ``down`` is ``invoke down`` (``--all``: ``invoke down --all``) on the
lab host.

    python3 onhost.py exec -- ARGV...

runs ARGV (e.g. ``ip netns exec P-host dumpcap ...``) and ends it when the SSH session that
started it goes away.  sshd closes its end of the command's stdout and stderr when the session's
channel closes (the local ``ssh`` was stopped or killed), but a command that is writing nothing
(``nc`` in a tarpit, ``dumpcap`` between packets) would never notice; this wrapper polls those
pipes and, once their reader is gone, sends the command's process group SIGTERM, then SIGKILL.
It needs nothing but the standard library, so it runs as a plain script (``python3 -I -S``,
~20 ms to start) without the harness importable.

Standard library only, Python 3.9+ (the lab host's system python3).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time

STOP_GRACE_S = 2.0


# --------------------------------------------------------------------------- exec, tied

def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _stop_group(pgid: int, pid: int) -> int:
    """SIGTERM the command's group, SIGKILL it after a grace period; its exit status."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _status(status)
            time.sleep(0.02)
    return 128 + signal.SIGKILL


def exec_tied(argv: list[str]) -> int:
    """Run ``argv`` in its own process group; return its exit status, or stop it when the
    reader of our stdout or stderr goes away (the SSH session ended)."""
    pid = os.fork()
    if pid == 0:                                 # the command: its own group, our stdio
        os.setpgid(0, 0)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"onhost exec: cannot run {argv[0]}: {e.strerror}\n".encode())
            os._exit(127)
    try:
        os.setpgid(pid, pid)                     # both sides set it: no race with killpg
    except (ProcessLookupError, PermissionError):
        pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: _forward(pid, s))
    poller = select.poll()
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except OSError:                          # a kernel before 5.3
            pidfd = None
    for fd in (1, 2):
        poller.register(fd, 0)                   # POLLERR/POLLHUP are always reported
    while True:
        try:
            events = poller.poll(None if pidfd is not None else 50)
        except InterruptedError:
            events = []
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _status(status)
        if any(fd in (1, 2) and ev & (select.POLLERR | select.POLLHUP) for fd, ev in events):
            return _stop_group(pid, pid)


def _forward(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- labs

def _lab_report(b) -> dict:
    pub = (b.state_dir / "ssh_host_ed25519_key.pub").read_text().strip()
    return {"ok": True, "state_dir": str(b.state_dir), "responder_dir": b.responder_dir(),
            "inventory_vars": b.inventory_vars(), "host_key": pub}


def labs_up(prefixes: list[str], keys: dict) -> dict:
    """Make (or complete) each netns lab with the controller's SSH keys (``keys``: prefix ->
    ``authorized_key``, the controller's public key; ``host_key``/``host_key_pub``, the lab
    sshd's host key pair, made by the controller so its known_hosts is strict from the first
    connection).  ``{"labs": {prefix: report}, "changed": any lab made}``."""
    from harness.lab.netns import NetnsBackend
    from harness.util import LabError
    out = {}
    for prefix in prefixes:
        try:
            k = keys.get(prefix) or {}
            if not all(str(k.get(f, "")).strip() for f in ("authorized_key", "host_key",
                                                             "host_key_pub")):
                raise LabError(f"no SSH keys for lab '{prefix}' from the controller")
            b = NetnsBackend(prefix=prefix)
            with b.locked():
                fresh = not b.exists()
                try:
                    _install_keys(b, k, fresh)
                    b.up()
                    b.state.write("authorized_keys", k["authorized_key"].strip() + "\n")
                except BaseException:
                    if fresh:
                        b.down()
                    raise
            out[prefix] = dict(_lab_report(b), made=fresh)
        except LabError as e:
            out[prefix] = {"ok": False, "error": str(e)}
    return {"labs": out, "changed": any(r.get("made") for r in out.values())}


def _install_keys(b, k: dict, fresh: bool) -> None:
    """The controller's host key for the lab's sshd, before ``up`` starts it.  An existing lab
    whose sshd runs with another key was made for someone else: refused, not taken over."""
    from harness.util import LabError
    pub = k["host_key_pub"].strip()
    if not fresh:
        try:
            have = (b.state_dir / "ssh_host_ed25519_key.pub").read_text().strip()
        except OSError:
            have = ""
        if have and have.split()[:2] != pub.split()[:2]:
            raise LabError(f"lab '{b.prefix}' exists on this lab host with another SSH host key "
                           f"(made by another controller, or its record here was lost): remove "
                           f"it (`invoke down --all --hosts INVENTORY`) or use another --prefix")
    b.state.prepare()
    b.state.write("ssh_host_ed25519_key", k["host_key"].strip() + "\n", 0o600)
    b.state.write("ssh_host_ed25519_key.pub", pub + "\n", 0o644)


def labs_down(prefixes: list[str], every: bool) -> dict:
    """``invoke down`` of each lab (``every``: ``invoke down --all``) on this host."""
    from harness.lab.labs import backend_for, down_all
    from harness.util import LabError
    if every:
        return down_all()
    res = {"removed": [], "busy": [], "failed": {}}
    for prefix in prefixes:
        try:
            b = backend_for(prefix)
            with b.locked():
                b.down()
            res["removed"].append(prefix)
        except LabError as e:
            res["failed"][prefix] = str(e)
    return res


def labs_status() -> list:
    from harness.lab.labs import status_all
    return status_all()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m harness.lab.onhost",
                                description="tcplab on a lab host (run by the tcplab_labhost "
                                            "Ansible role; see harness/lab/remote.py)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="make (or complete) netns labs; JSON report on stdout")
    up.add_argument("--keys", required=True, metavar="FILE",
                    help="JSON file ('-': stdin): prefix -> {authorized_key, host_key, "
                         "host_key_pub}")
    up.add_argument("prefixes", nargs="+")
    down = sub.add_parser("down", help="remove labs (--all: every lab on this host)")
    down.add_argument("--all", action="store_true", dest="every")
    down.add_argument("prefixes", nargs="*")
    sub.add_parser("status", help="every lab on this host, as invoke status --all --json")
    ex = sub.add_parser("exec", help="run ARGV, ended when the SSH session goes away")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    opts = p.parse_args(argv)
    if opts.cmd == "exec":
        args = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
        if not args:
            p.error("exec needs a command")
        return exec_tied(args)
    from harness.util import LabError
    try:
        if opts.cmd == "up":
            if opts.keys == "-":
                keys = json.load(sys.stdin)
            else:
                with open(opts.keys) as f:
                    keys = json.load(f)
            res = labs_up(opts.prefixes, keys)
        elif opts.cmd == "down":
            if not opts.every and not opts.prefixes:
                p.error("down needs PREFIX... or --all")
            res = labs_down(opts.prefixes, opts.every)
        else:
            res = labs_status()
    except (LabError, ValueError, OSError) as e:
        print(json.dumps({"error": str(e)}))
        return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
