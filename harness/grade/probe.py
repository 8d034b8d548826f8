"""What the grader asks the lab VM about a running submission, from the outside.

:data:`SOURCE` is a small stdlib-only Python program (Python 3.9+: it runs with the VM's own
``python3``, in a Debian guest or, on netns, on this machine inside the lab's namespace).  The
launcher starts it over SSH beside the submission, as ``python3 -c SOURCE agent``: an *agent*
that stays for the lesson and answers commands on its stdin, one JSON line each (``{"n": N,
...}``, N the command's number), so the grader pays for one SSH session per lesson instead of
one per question (an SSH exec costs 0.1-0.5 s here; a question to the agent, milliseconds):

* ``N ready ROOT TIMEOUT`` -- polls every 20 ms until a process under ROOT (``/proc/*/stat``
  parents) holds a raw socket -- an inode of the namespace's ``/proc/net/raw`` or
  ``/proc/net/packet`` among its ``/proc/PID/fd`` links -- or ROOT has ended, or TIMEOUT
  seconds: ``{"ready": bool, "gone": bool, "after": seconds}``.  That is how a program is seen
  to be ready without it printing anything.
* ``N stop ROOT GRACE GROUP`` -- SIGTERM to every process under ROOT that is not the sandbox
  itself (``bwrap``), children first; waits up to GRACE seconds for ROOT to end; then SIGKILL
  to whatever is left (and, GROUP=1, to ROOT's process group: a real guest, no sandbox):
  ``{"processes": how many it had, "killed": ROOT outlived GRACE, "ended": ROOT had already
  ended by itself}`` (then nothing is signalled).
* ``N status ROOT`` -- ``{"tree": [[pid, ppid, uid, comm, state], ...], "raw": [pid, ...]}``.

Importable too, so the unit tests run the same functions on this machine's ``/proc``.
"""

from __future__ import annotations

SOURCE = r'''
import json, os, signal, sys, time

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


def live(root):
    return [p for p in tree(root) if p[4] not in ("Z", "X")]


def program(root):
    """The submission's live processes: not the sandbox's own."""
    return [p for p in live(root) if p[3] not in SANDBOX]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def ready(root, timeout):
    t0 = time.monotonic()
    while True:
        procs_ = live(root)
        after = round(time.monotonic() - t0, 3)
        if not procs_:
            return {"ready": False, "gone": True, "after": after}
        if raw_holders([p[0] for p in procs_]):
            return {"ready": True, "gone": False, "after": after}
        if after > timeout:
            return {"ready": False, "gone": False, "after": after}
        time.sleep(0.02)


def kill(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def stop(root, grace, group):
    if not alive(root):
        return {"processes": 0, "killed": False, "ended": True}
    first = program(root)
    kill([p[0] for p in reversed(first)], signal.SIGTERM)          # children first
    deadline = time.monotonic() + grace
    while alive(root) and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = alive(root)
    if killed or (group and program(root)):
        kill([p[0] for p in reversed(program(root))] + [p[0] for p in first], signal.SIGKILL)
        if group:
            try:
                os.killpg(root, signal.SIGKILL)
            except OSError:
                pass
    return {"processes": len(first), "killed": killed, "ended": False}


def answer(words):
    cmd, root = words[0], int(words[1])
    if cmd == "ready":
        return ready(root, float(words[2]))
    if cmd == "stop":
        return stop(root, float(words[2]), words[3] == "1")
    if cmd == "status":
        return {"tree": tree(root), "raw": raw_holders([p[0] for p in live(root)])}
    raise ValueError("unknown command " + cmd)


def main(argv):
    if argv != ["agent"]:
        sys.stderr.write("usage: python3 -c SOURCE agent\n")
        return 2
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        reply = answer(words[1:])
        reply["n"] = int(words[0])
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def agent_command(python: str = "/usr/bin/python3") -> list:
    """argv that runs the agent in the VM: ``python3 -c SOURCE agent``."""
    return [python, "-c", SOURCE, "agent"]


def load():
    """The probe's functions as a module (for tests and local use)."""
    ns: dict = {"__name__": "tcplab_probe"}
    exec(compile(SOURCE, "harness/grade/probe.py:SOURCE", "exec"), ns)
    return ns
