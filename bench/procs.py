"""Processes the benchmark runs inside the lab's namespaces (``ip netns exec NS ...``).

``ip netns exec`` enters the namespace and ``exec``s the command, so the ``Popen`` PID is the
server's own PID: its ``/proc/PID/status`` (RSS) and ``/proc/PID/stat`` (CPU) can be read from
here.  stderr goes to a file, never a pipe: the responder logs a line per state transition, and
a full pipe would stall it mid-benchmark.  Every process runs in its own session, so a stop
reaches its children too, and an ``atexit`` hook kills whatever is still running.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
from pathlib import Path

from harness.util import wait_until

_live: set = set()


class ProcError(RuntimeError):
    """A benchmark process did not start or did not say it was ready."""


class NsProcess:
    def __init__(self, argv: list[str], log_path: Path, *, cwd: Path | None = None,
                 stdin: bool = False, stdout: bool = False, label: str | None = None):
        self.argv = argv
        self.log_path = Path(log_path)
        self.label = label or " ".join(argv[-6:])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, stderr=self._log,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self._on_stop: list = []
        _live.add(self)

    def on_stop(self, fn) -> None:
        """Call ``fn()`` once the process has been stopped (e.g. remove a rule it needed)."""
        self._on_stop.append(fn)

    def stderr_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """Wait for a stderr line matching ``pattern``; raise if it exits or times out."""
        rx = re.compile(pattern, re.M)
        found: list = []

        def ready() -> bool:
            m = rx.search(self.stderr_text())
            if m:
                found.append(m)
            return bool(m) or self.proc.poll() is not None
        wait_until(ready, timeout, interval=0.02)
        if found:
            return found[0]
        tail = self.stderr_text().strip()[-600:]
        if self.proc.poll() is not None:
            raise ProcError(f"{self.label} exited {self.proc.returncode}: {tail or '(no stderr)'}")
        raise ProcError(f"{self.label}: no line matching {pattern!r} within {timeout:g} s; "
                        f"stderr: {tail!r}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait; SIGKILL the whole session if it does not go.  Returns the status."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self._close()
        while self._on_stop:
            self._on_stop.pop()()
        return self.proc.returncode

    def _close(self):
        _live.discard(self)
        for f in (self._log, self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass

    def last_json(self) -> dict:
        """The last JSON object line of its stderr (counters), or {}."""
        from harness.run.responder import responder_counters  # the demo reads the line the same way
        return responder_counters(self.stderr_text())


def proc_status(pid: int) -> dict:
    """RSS and peak RSS (kB), CPU seconds (user+system) and user-space CPU seconds of a
    process, from /proc."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tick   # utime, stime
        out["user_s"] = int(fields[11]) / tick
    except (OSError, IndexError, ValueError):
        pass
    return {"rss_kb": out.get("VmRSS"), "hwm_kb": out.get("VmHWM"), "cpu_s": out.get("cpu_s"),
            "user_s": out.get("user_s")}


@atexit.register
def _kill_leftovers():
    for p in list(_live):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for fn in p._on_stop:
            try:
                fn()
            except Exception:           # noqa: BLE001 -- at exit, clean what can be cleaned
                pass


def cpu_times() -> dict:
    """This machine's CPU time so far (all cores, seconds) by kind, from /proc/stat, plus the
    CPU time of this process's waited-for children (the load generator)."""
    import resource
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        vals = [int(x) / tick for x in f.readline().split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = vals
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": user + nice, "system": system + irq, "softirq": softirq,
            "idle": idle + iowait, "children": ru.ru_utime + ru.ru_stime}


def cpu_delta(before: dict, after: dict) -> dict:
    """Shares of the machine's CPU time between two :func:`cpu_times` (busy = not idle), and
    the children's CPU seconds."""
    d = {k: after[k] - before[k] for k in before}
    total = d["user"] + d["system"] + d["softirq"] + d["idle"]
    out = {f"{k}_share": round(d[k] / total, 3) if total else None
           for k in ("user", "system", "softirq")}
    out["busy_share"] = round(1 - d["idle"] / total, 3) if total else None
    out["children_cpu_s"] = round(d["children"], 3)
    return out
