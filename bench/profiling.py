"""Item 6 of ``invoke bench`` (``invoke bench --profile``): where the time goes.

* the account of every microsecond (:mod:`bench.account`) of the server's CPU per hello
  connection, for the responder under each runtime and for the kernel + asyncio server;
* the per-segment Python path in process on each runtime (:mod:`bench.hotpath`) and under the
  venv's CPython beside Scapy (:mod:`bench.micro`);
* the responder (CPython) and the kernel server under cProfile for the same load
  (:func:`summarize_profile`).

Functions take the runner's :class:`bench.runner.Bench` (its servers, load generator, params).
"""

from __future__ import annotations

import json
import os
import pstats
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.lab import LAB_PORT
from harness.lab.firewall import Firewall, local
from harness.util import PROJECT_ROOT
from responder.contract import RUNTIMES, rst_rule

from . import account, micro
from .procs import proc_status

PORT_KERNEL_HELLO = 8080            # bench.runner's kernel hello server


def subject(runtime: str, quiet: bool = False) -> str:
    """The results key of the responder under ``runtime``: ``tcplab`` (CPython, the key every
    earlier run used) or ``tcplab-pypy``; ``+quiet`` with the quiet kernel (``--rx packet``
    and contract.quiet_rule)."""
    if quiet:
        return f"tcplab-{runtime}+quiet"
    return "tcplab" if runtime == "cpython" else f"tcplab-{runtime}"


def item_profile(b) -> dict:
    """The account of every microsecond (:mod:`bench.account`) for each runtime and the
    kernel server; the per-segment Python path in process on each runtime
    (:mod:`bench.hotpath`) and under the venv's CPython beside Scapy (:mod:`bench.micro`);
    the responder (CPython) and the kernel server under cProfile."""
    p = b.p
    out = {"n": p.profile_n, "c": p.hello_c,
           "note": "cProfile adds roughly 2-4x overhead to pure-Python code; compare "
                   "the two servers with each other, not with the unprofiled figures"}
    # the per-segment path without sockets, profiler or scheduler in the way
    out["in_process"] = [micro.stack_round(p.stack_conns) for _ in range(p.rounds)]
    out["hotpath"] = {rt: hotpath(b, rt) for rt in b.runtimes}
    out["account"] = accounts(b)
    for name, start, port, loop in (
            ("tcplab", lambda f: b.responder("hello", profile_to=f), LAB_PORT,
             ("io.py", "run")),
            ("kernel", lambda f: b.kernel("hello", PORT_KERNEL_HELLO, profile_to=f),
             PORT_KERNEL_HELLO, ("base_events.py", "run_forever"))):
        # The responder writes its profile at exit, as the unprivileged user it became
        # (nobody): into a directory anyone may write to, not the bench's private one.
        shared = Path(tempfile.mkdtemp(prefix="tcplab-prof-"))
        try:
            shared.chmod(0o1777)
            prof = shared / f"{name}.prof"
            res = b.measure(lambda: start(prof), port, "hello", p.profile_n, p.hello_c)
            out[name] = summarize_profile(prof, res, loop)
            if b.keep_as and prof.exists():
                kept = b.keep_as.with_name(f"{b.keep_as.name}-{name}.prof")
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(prof, kept)
                out[name]["file"] = os.path.relpath(kept, PROJECT_ROOT)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
    return out


def hotpath(b, runtime: str) -> dict:
    """``RUNTIME -m bench.hotpath``: µs per segment and per connection in process, and
    whether the bytes sent are the fixed reference's."""
    argv = [RUNTIMES[runtime], "-m", "bench.hotpath", "--conns", str(b.p.hotpath_conns),
            "--rounds", str(b.p.hotpath_rounds)]
    r = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        return {"error": f"bench.hotpath exited {r.returncode}: {r.stderr.strip()[-400:]}"}
    res["exit"] = r.returncode
    return res

def accounts(b) -> dict:
    """:meth:`account_of` each responder runtime and the kernel server, in turn."""
    tools = account.tool_status()
    out = {"tools": tools, "n": b.p.account_n, "warmup_n": b.p.warmup_n}
    if not (tools["perf_record"] or tools["strace"]):
        out["error"] = tools.get("hint", "neither perf nor strace")
        return out
    subjects = [(subject(rt), lambda rt=rt: b.responder("hello", runtime=rt), LAB_PORT)
                for rt in b.runtimes]
    fast = b.runtimes[-1]               # pypy when asked for: the quiet kernel's account
    subjects.append((subject(fast, quiet=True),
                     lambda: b.responder("hello", runtime=fast, quiet=True), LAB_PORT))
    subjects.append(("kernel", lambda: b.kernel("hello", PORT_KERNEL_HELLO),
                     PORT_KERNEL_HELLO))
    for name, start, port in subjects:
        try:
            out[name] = account_of(b, name, start, port, tools)
        except Exception as e:              # noqa: BLE001 -- one subject failing is data
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        b.log(f"  account {name}: {_account_line(out[name])}")
    return out

def account_of(b, name: str, start, port: int, tools: dict) -> dict:
    """Three warm rounds of ``account_n`` hello connections against one server: a clean one
    (the server's CPU from /proc, the RST rule's counter and ``/proc/softirqs`` around it),
    one sampled (``perf record``: where the CPU went; sampling adds its own cost, so its
    total is shown beside the clean one) and one with every system call traced (``perf
    trace -s`` or ``strace -c``: exact counts, slowed)."""
    p = b.p
    n, c = p.account_n, p.hello_c
    out = {}
    srv = start()
    try:
        if p.warmup_n:
            b.loadgen(port, "hello", p.warmup_n, c)
        rst0, irq0, cpu0 = rst_count(b), account.read_softirqs(), proc_status(srv.pid)
        load = b.loadgen(port, "hello", n, c)
        rst1, irq1, cpu1 = rst_count(b), account.read_softirqs(), proc_status(srv.pid)
        ok = load.get("ok") or 0
        out["load"] = {k: load.get(k) for k in ("ok", "started", "conn_per_s", "errors")}
        if ok:
            out["cpu_us_per_conn"] = round((cpu1["cpu_s"] - cpu0["cpu_s"]) / ok * 1e6, 1)
            out["softirqs_per_conn"] = {k: round(v / ok, 2) for k, v in
                                        account.delta(irq0, irq1).items() if v}
            if rst0 is not None and rst1 is not None and port == LAB_PORT:
                out["rsts_dropped_per_conn"] = round((rst1 - rst0) / ok, 2)
        if tools["perf_record"]:
            cpu0 = proc_status(srv.pid)
            rec = account.perf_record(srv.pid, b.work / f"{name}.perf")
            try:
                sampled = b.loadgen(port, "hello", n, c)
            finally:
                data = rec.stop()
            cpu1 = proc_status(srv.pid)
            sok = sampled.get("ok") or 0
            if sok:
                out["perf"] = account.account(account.perf_samples(data), sok)
                out["perf"]["cpu_us_per_conn_while_sampled"] = round(
                    (cpu1["cpu_s"] - cpu0["cpu_s"]) / sok * 1e6, 1)
                out["perf"]["conn_per_s_sampled"] = sampled.get("conn_per_s")
                out["by_cause_us_per_conn"] = account.scaled(out["perf"]["by_cause_us_per_conn"],
                                                             out.get("cpu_us_per_conn"))
        use_perf = tools["perf_trace"]
        tr = account.syscall_tracer(srv.pid, b.work / f"{name}.trace", use_perf)
        try:
            traced = b.loadgen(port, "hello", n, c)
        finally:
            tr.stop()
        calls = account.syscall_summary(tr.out, use_perf)
        tok = traced.get("ok") or 0
        out["syscalls"] = {"tool": "perf trace -s" if use_perf else "strace -c -f",
                           "connections": tok, "per_conn": account.per_connection(calls, tok),
                           "calls": calls, "conn_per_s_traced": traced.get("conn_per_s")}
    finally:
        out["server_exit"] = srv.stop()
    return out


def rst_count(b) -> int | None:
    """The lab RST rule's packet counter in the VM namespace (None if not there)."""
    listing = Firewall(local(b.b.vm_exec_prefix())).listing("OUTPUT")
    return account.rule_packets(listing, rst_rule())


def _account_line(acc: dict) -> str:
    if "error" in acc:
        return acc["error"]
    calls = acc.get("syscalls", {}).get("per_conn", {})
    perf = acc.get("perf", {})
    return (f"{acc.get('cpu_us_per_conn')} us CPU per connection "
            f"({acc.get('load', {}).get('conn_per_s')} conn/s), while sampled "
            f"{perf.get('cpu_us_per_conn_while_sampled')} us of which "
            f"{perf.get('sampled_us_per_conn')} us in samples, "
            f"{sum(calls.values()):.1f} syscalls per connection, "
            f"{acc.get('rsts_dropped_per_conn', '-')} RSTs dropped per connection")


def format_account(acc: dict, causes: int = 8) -> str:
    """The account's summary: per server, CPU per connection, where it went (the largest
    causes), system calls per connection and the VM kernel's RSTs."""
    lines = [f"account of the server's CPU per hello connection ({acc.get('n')} connections, "
             f"warm; the clean round's CPU split as the sampled round's perf samples; "
             f"syscalls from {acc.get('tools', {}).get('perf_trace') and 'perf trace' or 'strace'}):"]
    for name, a in acc.items():
        if not isinstance(a, dict) or not (name.startswith("tcplab") or name == "kernel"):
            continue
        if "error" in a:
            lines.append(f"  {name}: {a['error']}")
            continue
        lines.append(f"  {name}: {_account_line(a)}")
        for cause, us in list(a.get("by_cause_us_per_conn", {}).items())[:causes]:
            lines.append(f"    {us:7.1f} us  {cause}")
        calls = a.get("syscalls", {}).get("per_conn", {})
        if calls:
            lines.append("    syscalls per connection: " + ", ".join(
                f"{k} {v:g}" for k, v in list(calls.items())[:6]))
    return "\n".join(lines)



WAITS = ("~:0(<method 'poll' of 'select.", "~:0(<method 'select' of 'select.",
         "~:0(<built-in method select.")


def _is_wait(function: str) -> bool:
    return function.startswith(WAITS)


def summarize_profile(path: Path, res: dict, loop: tuple = ("io.py", "run"),
                      top: int = 15) -> dict:
    """The cProfile file as JSON: busy time (inside the event loop ``loop`` = (file name,
    function), less waiting in the selector) per connection and per segment, and the top
    functions by own time and by cumulative time (the selector wait left out)."""
    if not path.exists():
        return {"error": f"no profile written ({path.name}); server exit {res.get('server_exit')}",
                "load": res}
    st = pstats.Stats(str(path))
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _callers) in st.stats.items():
        where = Path(file)              # the state machine is a package: tcp/conn.py, ...
        short = f"tcp/{where.name}" if where.parent.name == "tcp" else where.name
        rows.append({"function": f"{short}:{line}({fn})", "ncalls": nc,
                     "tottime_s": round(tt, 6), "cumtime_s": round(ct, 6)})
    total = st.total_tt
    waiting = sum(r["tottime_s"] for r in rows if _is_wait(r["function"]))
    # Only the event loop counts (start-up and imports would be charged to a short load
    # otherwise): its cumulative time, less the time it slept in the selector.
    in_loop = [r for r in rows if r["function"].startswith(loop[0] + ":")
               and r["function"].endswith(f"({loop[1]})")]
    loop_s = max((r["cumtime_s"] for r in in_loop), default=total)
    busy = loop_s - waiting
    ok = res.get("ok") or 0
    counters = res.get("server_counters", {})
    segs = (counters.get("segments_in") or 0) + (counters.get("segments_out") or 0)
    for r in rows:
        r["share_of_busy"] = round(r["tottime_s"] / busy, 4) if busy else None
        r["us_per_conn"] = round(r["tottime_s"] / ok * 1e6, 2) if ok else None
    modules: dict = {}
    for r in rows:
        if _is_wait(r["function"]):
            continue
        name = r["function"].split(":", 1)[0]
        if name == "~":         # C functions: name the system calls, the rest are builtins
            fn = r["function"]
            name = "syscall " + fn.split("'")[1] if "of '_socket.socket'" in fn \
                else "builtins (C)"
        elif name.startswith("tcp/"):
            name = "tcp/"
        elif name not in ("wire.py", "apps.py", "io.py"):
            name = "other Python"
        modules[name] = modules.get(name, 0.0) + r["tottime_s"]
    mod_total = sum(modules.values())
    by_tt = sorted((r for r in rows if not _is_wait(r["function"])),
                   key=lambda r: -r["tottime_s"])
    by_ct = sorted((r for r in rows if r["cumtime_s"] <= loop_s + 1e-9),
                   key=lambda r: -r["cumtime_s"])
    return {"connections": ok, "segments": segs or None, "total_s": round(total, 4),
            "loop": f"{loop[0]}({loop[1]})", "loop_s": round(loop_s, 4),
            "waiting_s": round(waiting, 4), "busy_s": round(busy, 4),
            "busy_us_per_conn": round(busy / ok * 1e6, 1) if ok else None,
            "busy_us_per_segment": round(busy / segs * 1e6, 2) if segs else None,
            "conn_per_s_profiled": res.get("conn_per_s"),
            # own time by module over the whole profile (start-up included), >= 0.5 %
            "by_module_share": {k: round(v / mod_total, 4) for k, v in
                                sorted(modules.items(), key=lambda kv: -kv[1])
                                if v / mod_total >= 0.005} if mod_total else {},
            "top_tottime": by_tt[:top], "top_cumtime": by_ct[:top]}


