"""The account of every microsecond: where a server's CPU per hello connection goes.

For one load round against one server process (``invoke bench --profile``; the runner drives
it), this module measures and sorts

* the process's CPU: ``utime + stime`` from ``/proc/PID/stat`` (what item 1 reports);
* where that CPU was spent, by sampling it: ``perf record -e cpu-clock -g -p PID`` (a sample
  every 250 us of the process's CPU, user and kernel, with the kernel call chain), each
  sample sorted by :func:`classify` into the system call it was in (``sendto``, ``recvfrom``,
  ``epoll_wait``, ...) and the *cause* of the kernel work: the send path proper, netfilter,
  the receive path of the other namespace run inside our ``sendto`` (a veth delivers to its
  peer in the sender's softirq), the VM kernel's own TCP answering the lab port's segments
  with RSTs that the lab's rule then drops, the copy to raw sockets, ...  User-space samples
  are the Python runtime (split by library: the interpreter, libc, PyPy's JIT code);
* system calls by kind, counted exactly: ``perf trace -s -p PID`` (or ``strace -c -f -p PID``
  where perf cannot trace), in a separate round because tracing every call slows the server;
* kernel work outside the process: ``/proc/softirqs`` deltas (machine-wide, both namespaces)
  and the lab's RST rule's packet counter (``iptables -v -S OUTPUT`` in the VM namespace)
  before and after: the VM kernel's RSTs that were made and dropped, per connection.

Everything here is parsing and sorting (tested in ``tests/unit/test_account.py``) plus thin
wrappers that start ``perf``/``strace`` next to a process and stop them with SIGINT.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

SAMPLE_PERIOD_NS = 250_000          # perf record -c: one sample per 250 us of CPU

# --- perf record: samples and their causes -----------------------------------------------

SOFTIRQ = ("handle_softirqs", "__do_softirq", "net_rx_action", "do_softirq")
RST = ("tcp_v4_send_reset",)
RAW_DELIVERY = ("raw_local_deliver", "raw_v4_input", "raw_rcv")
TCP_SOCKET = ("tcp_v4_do_rcv", "tcp_rcv_state_process", "tcp_rcv_established",
              "tcp_check_req", "tcp_child_process", "tcp_v4_syn_recv_sock")
NETFILTER = ("nf_hook_slow", "nft_do_chain", "ipt_do_table")
PACKET_TAP = ("tpacket_rcv", "packet_rcv")
RECV = ("recvfrom", "recvmsg", "recvmmsg", "read")
SEND = ("sendto", "sendmsg", "sendmmsg", "write", "writev")
WAIT = ("epoll_wait", "epoll_pwait", "select", "pselect6", "poll", "ppoll")

#: Every cause :func:`classify` can return, in the order the account lists them.
CAUSES = (
    "user space: Python runtime",
    "syscall: send path (skb, route, IP header, veth transmit)",
    "syscall: netfilter on the process's own packets (OUTPUT)",
    "syscall: receive (copy out of the socket queue)",
    "syscall: wait (epoll_wait, scheduler)",
    "syscall: other",
    "softirq in the process: the VM kernel's RSTs (made, then dropped by the RST rule)",
    "softirq in the process: TCP of a kernel socket (the client's; a kernel server's own)",
    "softirq in the process: tcp_v4_rcv before a socket (checksum, lookup; for the lab port the VM kernel finds none)",
    "softirq in the process: copy to raw sockets",
    "softirq in the process: packet sockets (AF_PACKET tap/ring)",
    "softirq in the process: netfilter (receive)",
    "softirq in the process: IP receive, veth backlog, skb free",
    "kernel, no syscall: page faults, interrupts, scheduler",
)


def parse_perf_script(text: str) -> list:
    """``perf script -F comm,tid,period,ip,sym,dso`` output -> ``[(period_ns, frames)]``,
    frames innermost first as ``(symbol, dso)``."""
    samples = []
    period, frames = None, []
    for line in text.splitlines():
        if not line.strip():
            if period is not None:
                samples.append((period, frames))
            period, frames = None, []
            continue
        if not line[0].isspace():
            if period is not None:
                samples.append((period, frames))
            parts = line.split()
            period = int(parts[-1]) if parts and parts[-1].isdigit() else 0
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            sym = m.group(1).split("+0x")[0]
            frames.append((sym, m.group(2)))
    if period is not None:
        samples.append((period, frames))
    return samples


def _is_kernel(dso: str) -> bool:
    return dso.startswith("[kernel") or dso.endswith(".ko") or dso == "[bpf_prog]"


def syscall_of(frames) -> str | None:
    """The system call a kernel stack is in (``__x64_sys_sendto`` -> ``sendto``), or None."""
    for sym, _dso in frames:
        m = re.match(r"__(?:x64|ia32|se|do)_sys_(\w+)$", sym)
        if m:
            return m.group(1)
    return None


def user_library(frames) -> str:
    """Which user-space library a user-space sample's innermost frame is in."""
    dso = frames[0][1] if frames else "[unknown]"
    name = Path(dso).name
    if name.startswith(("python", "libpython")):
        return "interpreter (CPython)"
    if "pypy" in name:
        return "interpreter (PyPy, not JIT code)"
    if name in ("[unknown]", "[JIT]", "") or name.startswith("perf-"):
        return "JIT code or unsymbolised (PyPy's JIT)"
    if name.startswith("libc.") or name.startswith("ld-linux"):
        return "libc"
    return name


def classify(frames) -> tuple:
    """``(syscall or None, cause)`` of one sample (see :data:`CAUSES`)."""
    if not frames or not any(_is_kernel(d) for _s, d in frames):
        return None, CAUSES[0]
    syms = {s for s, _d in frames if s}
    call = syscall_of(frames)
    if syms.intersection(SOFTIRQ):
        if syms.intersection(RST):
            return call, CAUSES[6]
        if syms.intersection(TCP_SOCKET):
            return call, CAUSES[7]
        if syms.intersection(RAW_DELIVERY):
            return call, CAUSES[9]
        if syms.intersection(PACKET_TAP):
            return call, CAUSES[10]
        if "tcp_v4_rcv" in syms:
            return call, CAUSES[8]
        if syms.intersection(NETFILTER):
            return call, CAUSES[11]
        return call, CAUSES[12]
    if call is None:
        return None, CAUSES[13]
    if call in SEND:
        return call, CAUSES[2] if syms.intersection(NETFILTER) else CAUSES[1]
    if call in RECV:
        return call, CAUSES[3]
    if call in WAIT:
        return call, CAUSES[4]
    return call, CAUSES[5]


def account(samples: list, conns: int, top: int = 15) -> dict:
    """Sort samples into µs per connection: by cause, by system call, user space by library,
    and the top kernel functions (innermost frame)."""
    by_cause: dict = {}
    by_call: dict = {}
    by_lib: dict = {}
    leaf: dict = {}
    total = 0
    for period, frames in samples:
        total += period
        call, cause = classify(frames)
        by_cause[cause] = by_cause.get(cause, 0) + period
        key = call or ("(user space)" if cause == CAUSES[0] else "(no syscall)")
        by_call[key] = by_call.get(key, 0) + period
        if cause == CAUSES[0]:
            lib = user_library(frames)
            by_lib[lib] = by_lib.get(lib, 0) + period
        elif frames:
            leaf[frames[0][0]] = leaf.get(frames[0][0], 0) + period

    def per_conn(d):
        return {k: round(v / 1000 / conns, 2) for k, v in
                sorted(d.items(), key=lambda kv: -kv[1])} if conns else {}
    out = {"samples": len(samples), "sampled_cpu_s": round(total / 1e9, 4),
           "connections": conns,
           "sampled_us_per_conn": round(total / 1000 / conns, 1) if conns else None,
           "by_cause_us_per_conn": {c: v for c, v in per_conn(by_cause).items()},
           "by_syscall_us_per_conn": per_conn(by_call),
           "user_space_by_library_us_per_conn": per_conn(by_lib)}
    out["top_kernel_functions_us_per_conn"] = dict(list(per_conn(leaf).items())[:top])
    return out


def scaled(by_cause: dict, cpu_us: float | None) -> dict:
    """``by_cause`` (sampled µs per connection) in the same proportions, summing to ``cpu_us``
    (the CPU of a round without the sampler, whose own cost inflates what it samples)."""
    total = sum(by_cause.values())
    if not cpu_us or not total:
        return {}
    return {k: round(v / total * cpu_us, 1) for k, v in by_cause.items()}


# --- perf trace -s / strace -c: system calls by kind -------------------------------------

def parse_perf_trace_summary(text: str) -> dict:
    """``perf trace -s`` summary -> ``{syscall: {"calls", "errors", "total_ms", "avg_ms"}}``
    (all threads added up)."""
    out: dict = {}
    for line in text.splitlines():
        m = re.match(r"\s+(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)\s", line)
        if not m:
            continue
        name, calls, errors, total = m.group(1), int(m.group(2)), int(m.group(3)), \
            float(m.group(4))
        row = out.setdefault(name, {"calls": 0, "errors": 0, "total_ms": 0.0})
        row["calls"] += calls
        row["errors"] += errors
        row["total_ms"] += total
    for row in out.values():
        row["total_ms"] = round(row["total_ms"], 3)
        row["avg_us"] = round(row["total_ms"] * 1000 / row["calls"], 2) if row["calls"] else None
    return out


def parse_strace_summary(text: str) -> dict:
    """``strace -c`` table -> the same shape as :func:`parse_perf_trace_summary`."""
    out: dict = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not re.match(r"^[\d.]+$", parts[0]) or parts[-1] == "total":
            continue
        try:
            seconds, calls = float(parts[1]), int(parts[3])
        except ValueError:
            continue
        errors = int(parts[4]) if len(parts) == 6 else 0
        out[parts[-1]] = {"calls": calls, "errors": errors, "total_ms": round(seconds * 1e3, 3),
                          "avg_us": round(seconds * 1e6 / calls, 2) if calls else None}
    return out


def per_connection(calls: dict, conns: int) -> dict:
    """Calls per connection by kind, most first."""
    if not conns:
        return {}
    return {k: round(v["calls"] / conns, 2) for k, v in
            sorted(calls.items(), key=lambda kv: -kv[1]["calls"])}


# --- counters outside the process ---------------------------------------------------------

def read_softirqs(path: str = "/proc/softirqs") -> dict:
    """``/proc/softirqs`` summed over CPUs: ``{"NET_RX": n, "TIMER": n, ...}``."""
    out = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return out
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        if rest:
            out[name.strip()] = sum(int(x) for x in rest.split())
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after}


def rule_packets(listing: str, rule: list) -> int | None:
    """The packet counter of ``rule`` (arguments after ``-A``, as :func:`responder.contract.
    rst_rule` gives them) in ``iptables -v -S CHAIN`` output, or None if it is not there.
    iptables prints ``-m tcp`` and the counters (``-c PKTS BYTES``) in its own places, so
    the rule is matched by its arguments without those (and an address as ``ADDR/32``)."""
    want = [a for a in rule if a not in ("-m", "tcp")]
    want = [f"{a}/32" if i and want[i - 1] in ("-s", "-d") and "/" not in a else a
            for i, a in enumerate(want)]
    for line in listing.splitlines():
        parts = line.split()
        if not parts or parts[0] != "-A":
            continue
        pkts = None
        args = []
        i = 1
        while i < len(parts):
            if parts[i] == "-c" and i + 1 < len(parts):
                pkts = int(parts[i + 1])
                i += 3
                continue
            args.append(parts[i])
            i += 1
        if [a for a in args if a not in ("-m", "tcp")] == want:
            return pkts
    return None


# --- running perf / strace next to a process ------------------------------------------------

def tool_status() -> dict:
    """What can be used here: ``{"perf_record": bool, "perf_trace": bool, "strace": bool}``
    and, when perf is missing, how to get it."""
    perf = shutil.which("perf")
    st = {"perf": perf, "strace": shutil.which("strace")}
    ok = False
    if perf:
        r = subprocess.run([perf, "stat", "-e", "cpu-clock", "true"], capture_output=True,
                           text=True, timeout=30)
        ok = r.returncode == 0
    st["perf_record"] = ok
    st["perf_trace"] = ok
    if not ok:
        st["hint"] = ("no working perf: apt-get install -y linux-perf (and strace); "
                      "perf needs root or kernel.perf_event_paranoid <= 1")
    return st


class Tracer:
    """``perf record``/``perf trace``/``strace -c`` attached to ``pid``, stopped with SIGINT
    (they then write their summary).  Output goes to ``out``; :meth:`stop` returns it."""

    def __init__(self, argv: list, out: Path):
        self.out = Path(out)
        self._err = open(self.out.with_suffix(".err"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self._err, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        time.sleep(0.5)                 # attached before the load starts
        if self.proc.poll() is not None:
            self._err.close()
            raise RuntimeError(f"{argv[0]} exited {self.proc.returncode}: "
                               f"{self.out.with_suffix('.err').read_text()[-400:]}")

    def stop(self, timeout: float = 60.0) -> Path:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return self.out


def perf_record(pid: int, out: Path) -> Tracer:
    return Tracer(["perf", "record", "-q", "-e", "cpu-clock", "-c", str(SAMPLE_PERIOD_NS),
                   "-g", "-p", str(pid), "-o", str(out)], out)


def perf_samples(data: Path) -> list:
    r = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,tid,period,ip,sym,dso"],
                       capture_output=True, text=True, timeout=300)
    return parse_perf_script(r.stdout)


def syscall_tracer(pid: int, out: Path, use_perf: bool) -> Tracer:
    if use_perf:
        return Tracer(["perf", "trace", "-s", "-p", str(pid), "-o", str(out)], out)
    return Tracer(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)], out)


def syscall_summary(out: Path, use_perf: bool) -> dict:
    text = out.read_text() if out.exists() else ""
    return parse_perf_trace_summary(text) if use_perf else parse_strace_summary(text)
