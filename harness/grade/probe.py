"""What the grader asks the lab VM about a running submission, from the outside.

:data:`SOURCE` is a small stdlib-only Python program (Python 3.9+: it runs with the VM's own
``python3``, in a Debian guest or, on netns, on this machine inside the lab's namespace) that
the launcher runs over SSH as ``python3 -c SOURCE COMMAND ROOT_PID``:

* ``status ROOT`` -- one JSON line: the processes under ROOT (``/proc/*/stat`` parents),
  each ``[pid, ppid, uid, comm, state]``, and which of them hold a raw socket: an inode of
  the namespace's ``/proc/net/raw`` or ``/proc/net/packet`` among their ``/proc/PID/fd``
  links.  That is how a program is seen to be ready without it printing anything.
* ``signal ROOT SIG`` -- sends SIG to every process under ROOT that is not the sandbox
  itself (``bwrap``), children first; one JSON line with the pids signalled.

Importable too, so the unit tests run the same functions on this machine's ``/proc``.
"""

from __future__ import annotations

SOURCE = r'''
import json, os, signal, sys

SANDBOX = ("bwrap",)


def procs():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                stat = f.read().decode(errors="replace")
            uid = os.stat("/proc/" + d).st_uid
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(d)] = [int(d), int(rest[1]), uid, comm, rest[0]]
    return out


def tree(root):
    every = procs()
    kids = {}
    for p in every.values():
        kids.setdefault(p[1], []).append(p[0])
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        if pid in every:
            found.append(every[pid])
        todo.extend(sorted(kids.get(pid, ())))
    return found


def socket_inodes():
    inodes = set()
    for name in ("raw", "packet"):
        try:
            with open("/proc/net/" + name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if name == "raw" and len(cols) >= 10:
                inodes.add(cols[9])
            elif name == "packet" and len(cols) >= 9:
                inodes.add(cols[8])
    return inodes


def raw_holders(pids):
    inodes = socket_inodes()
    out = []
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                out.append(pid)
                break
    return out


def main(argv):
    cmd, root = argv[0], int(argv[1])
    found = tree(root)
    live = [p for p in found if p[4] not in ("Z", "X")]
    if cmd == "status":
        print(json.dumps({"tree": found, "raw": raw_holders([p[0] for p in live])}))
    elif cmd == "signal":
        sig = getattr(signal, "SIG" + argv[2])
        sent = []
        for p in reversed(live):
            if p[3] in SANDBOX:
                continue
            try:
                os.kill(p[0], sig)
                sent.append(p[0])
            except OSError:
                pass
        print(json.dumps({"signalled": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def probe_command(command: str, root: int, *args: str, python: str = "/usr/bin/python3") -> list:
    """argv that runs the probe in the VM: ``python3 -c SOURCE COMMAND ROOT ARGS``."""
    return [python, "-c", SOURCE, command, str(root), *args]


def load():
    """The probe's functions as a module (for tests and local use)."""
    ns: dict = {"__name__": "tcplab_probe"}
    exec(compile(SOURCE, "harness/grade/probe.py:SOURCE", "exec"), ns)
    return ns
