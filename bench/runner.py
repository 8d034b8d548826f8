"""``invoke bench``: run the eight items on a lab of its own and report.

One netns lab (prefix ``bench`` + 4 random hex digits unless given) is made and provisioned at
the start and removed in ``finally``.  Every server runs alone in the VM namespace while it is
measured (a raw-socket or sniffing server sees *all* traffic, so two at once would tax each
other), and within a round each subject and its reference run back to back, in an order that
rotates from round to round.  The load generator runs in the host namespace.  Everything is
bounded: connection counts, per-connection timeouts, time budgets, ``--max-seconds`` on every
server, subprocess timeouts.

Items (keys of ``result["items"]``), and where each lives:

1. ``handshake`` (here, :meth:`Bench.item_handshake`): hello exchanges per second and connect
   latency: the responder (``--app hello``, port 80) vs the kernel + asyncio (port 8080) vs
   Scapy (port 8081, with its own RST rule, added and removed here).
2. ``http`` (here): requests per second and latency: miniweb (``--app http``) vs the kernel +
   ``http.server`` (port 8082), and vs the kernel + asyncio with a precomputed response (8083).
3. ``checksum``: :mod:`bench.micro`, in process.
4. ``tarpit`` (here): hold N connections; RSS growth and CPU of the responder (``--app
   tarpit``) vs a kernel + asyncio server that accepts and holds (port 8084).
5. ``lab`` (:mod:`bench.lab`): ``invoke up`` from nothing and ``invoke down`` on a second,
   scratch lab (and the QEMU backend with ``--backend qemu``), ``invoke demo`` on the warm bench
   lab; the step shares; the same-run references are bare ``ip netns`` commands and a bare
   ``nc`` exchange.
6. ``profile``: the account of the server's CPU per connection on each runtime, bench.hotpath,
   and the responder and the asyncio server under cProfile (:mod:`bench.profiling`).
7. ``labs``: many labs at once (:mod:`bench.labs`): ``invoke up --labs 8`` and ``--labs 40``,
   40 demos at once on them, memory per idle lab; in a state root of its own.
8. ``grading``: ``invoke grade`` of one submission on a warm lab vs the same lessons as demos,
   and a class with ``--jobs 4`` vs ``--jobs 1`` (:mod:`bench.grading`; its labs are its own;
   left out of ``--quick`` unless ``--only`` names it).

The table's rows, item by item, are :mod:`bench.rows`; the table, JSON and plot
:mod:`bench.report`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from harness.lab import LAB_PORT, get_backend
from harness.lab import firewall
from harness.lab.firewall import Firewall, local, port_rst_rule
from harness.util import PROJECT_ROOT, LabError, progress, require_root

from responder.contract import RUNTIMES

from . import grading, lab, micro, profiling
from .lab import timed_invoke
from .labs import LabsBench
from .procs import NsProcess, cpu_delta, cpu_times, proc_status
from .profiling import subject
from .report import ITEMS, format_errors, format_machine, format_missed, format_table, plot, \
    write_json
from .rows import comparisons

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
RESPONDER_PYTHON = RUNTIMES["cpython"]      # what the lab VM runs the references with
VENV_PYTHON = sys.executable                # has Scapy (the Scapy responder only)

PORT_KERNEL_HELLO = 8080
PORT_SCAPY = 8081
PORT_HTTP_SERVER = 8082
PORT_HTTP_ASYNCIO = 8083
PORT_HOLD = 8084
SERVER_MAX_S = 300          # every server stops by itself after this long


@dataclass(frozen=True)
class Params:
    rounds: int = 5
    hello_n: int = 5000
    hello_c: int = 50
    scapy_n: int = 1000
    http_n: int = 2000
    http_c: int = 50
    tarpit_n: int = 10000
    tarpit_c: int = 200
    tarpit_rounds: int = 3
    hold_s: float = 2.0               # how long the N connections are held once all are up
    micro_iters: int = 50000
    lab_rounds: int = 3
    demo_rounds: int = 3
    profile_n: int = 3000
    stack_conns: int = 1000           # in-process hello exchanges per round (item 6)
    conn_timeout_s: float = 5.0
    budget_s: float = 30.0
    warmup_n: int = 3000              # untimed connections before each timed load (JIT warm-up)
    account_n: int = 5000             # the account's load (item 6, per subject)
    hotpath_conns: int = 2000         # bench.hotpath on each runtime (item 6)
    hotpath_rounds: int = 3
    labs_small: int = 8               # item labs: `invoke up --labs N` twice, then N demos
    labs_big: int = 40


FULL = Params()
QUICK = Params(rounds=2, hello_n=400, hello_c=20, scapy_n=100, http_n=300, http_c=20,
               tarpit_n=1000, tarpit_c=100, tarpit_rounds=1, hold_s=0.5, micro_iters=5000, lab_rounds=1,
               demo_rounds=1, profile_n=300, stack_conns=200, budget_s=8.0, warmup_n=100,
               account_n=400, hotpath_conns=300, hotpath_rounds=1, labs_small=3,
               labs_big=6)


def check_runtimes(runtimes) -> list:
    """The runtimes asked for, each known and installed here (the netns "VM" is this machine),
    or a LabError saying how to get it."""
    out = []
    for r in runtimes:
        if r not in RUNTIMES:
            raise LabError(f"unknown runtime {r!r}; choose from {', '.join(RUNTIMES)}")
        if not os.access(RUNTIMES[r], os.X_OK):
            raise LabError(f"runtime {r}: {RUNTIMES[r]} is not installed; apt-get install -y "
                           f"{Path(RUNTIMES[r]).name} (./bootstrap installs it), or leave it out "
                           f"with --runtime")
        out.append(r)
    return out


def machine_info() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for name, exe in RUNTIMES.items():
        if os.access(exe, os.X_OK):
            versions[name] = subprocess.run(
                [exe, "-c", "import sys; print(sys.version.replace(chr(10), ' '))"],
                capture_output=True, text=True).stdout.strip()
    return {"cpu_model": model, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": versions.get("cpython", "?").split()[0], "runtimes": versions,
            "mem_gb": mem, "loadavg_before": _loadavg()}


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def git_info() -> dict:
    def g(*a):
        r = subprocess.run(["git", *a], cwd=PROJECT_ROOT, capture_output=True, text=True)
        return r.stdout.strip()
    return {"commit": g("rev-parse", "--short", "HEAD"),
            "dirty": bool(g("status", "--porcelain", "--", "responder", "bench", "harness"))}


class Bench:
    def __init__(self, backend, params: Params, workdir: Path, log=progress,
                 keep_as: Path | None = None, runtimes=("cpython",)):
        self.b = backend
        self.p = params
        self.runtimes = tuple(runtimes)
        self.work = workdir
        self.keep_as = keep_as          # profiles are kept as <keep_as>-<name>.prof
        self.log = log
        self.vm_ip = backend.vm_ip
        self._n = 0

    # --- processes ----------------------------------------------------------------------
    def _logfile(self, name: str) -> Path:
        self._n += 1
        return self.work / f"{self._n:03d}-{name}.log"

    def start_vm(self, name: str, argv: list[str], cwd: Path | str) -> NsProcess:
        """Start a server in the VM namespace and wait until it says it is listening."""
        p = NsProcess(self.b.vm_exec_prefix() + argv, self._logfile(name), cwd=cwd, label=name)
        try:
            p.wait_for(r"^listening on ", timeout=30)
        except BaseException:
            p.stop()
            raise
        return p

    def responder(self, app: str, profile_to: Path | None = None,
                  runtime: str = "cpython", args=(), quiet: bool = False, cwd=None):
        """The responder under ``runtime``; ``quiet``: receiving with ``--rx packet`` while the
        VM kernel is kept from seeing the lab port's segments (contract.quiet_rule, added
        here and removed when the server is stopped); ``cwd``: run the ``responder`` package
        found there instead of the lab's provisioned one (``bench.ab``'s ``@REV``)."""
        cwd = cwd or self.b.responder_dir()
        pre = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        argv = [RUNTIMES[runtime], *pre, "-m", "responder", "--listen",
                f"{self.vm_ip}:{LAB_PORT}", "--app", app, *args]
        if not quiet:
            return self.start_vm(f"responder-{app}-{runtime}", argv, cwd)
        rule = Firewall(local(self.b.vm_exec_prefix())).applied(
            [firewall.quiet_rule(self.vm_ip, LAB_PORT)], first=True)
        rule.__enter__()
        try:
            p = self.start_vm(f"responder-{app}-{runtime}-quiet", argv + ["--rx", "packet"],
                              cwd)
        except BaseException:
            rule.__exit__(None, None, None)
            raise
        p.on_stop(lambda: rule.__exit__(None, None, None))
        return p

    def kernel(self, mode: str, port: int, profile_to: Path | None = None) -> NsProcess:
        pre = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        return self.start_vm(f"kernel-{mode}", [RESPONDER_PYTHON, *pre, "-m", "bench.servers",
                                                mode, "--listen", f"{self.vm_ip}:{port}",
                                                "--max-seconds", str(SERVER_MAX_S)], PROJECT_ROOT)

    def scapy(self, port: int) -> NsProcess:
        return self.start_vm("scapy", [VENV_PYTHON, "-m", "bench.scapy_responder", "--listen",
                                       f"{self.vm_ip}:{port}", "--iface", self.b.vm_interface,
                                       "--max-seconds", str(SERVER_MAX_S)], PROJECT_ROOT)

    def loadgen_argv(self, port: int, mode: str, n: int, c: int) -> list[str]:
        return self.b.host_exec_prefix() + [
            VENV_PYTHON, "-m", "bench.loadgen", "--connect", f"{self.vm_ip}:{port}",
            "--mode", mode, "-n", str(n), "-c", str(c), "--timeout", str(self.p.conn_timeout_s),
            "--budget", str(self.p.budget_s)]

    def loadgen(self, port: int, mode: str, n: int, c: int) -> dict:
        argv = self.loadgen_argv(port, mode, n, c)
        limit = self.p.budget_s + self.p.conn_timeout_s + 30
        try:
            r = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=limit)
        except subprocess.TimeoutExpired:
            raise LabError(f"load generator did not finish within {limit:g} s")
        for line in reversed(r.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise LabError(f"load generator exited {r.returncode} without a result: "
                       f"{r.stderr.strip()[-500:]}")

    def measure(self, start, port: int, mode: str, n: int, c: int, warmup: int = 0) -> dict:
        """Start one server, warm it up with ``warmup`` untimed connections (a JIT compiles
        the hot path during its first thousands of segments), run one load against it, stop
        it; the load's figures plus the server's CPU per connection and its exit counters."""
        p = start()
        try:
            warm = self.loadgen(port, mode, warmup, c) if warmup else None
            before, m0 = proc_status(p.pid), cpu_times()
            res = self.loadgen(port, mode, n, c)
            after, m1 = proc_status(p.pid), cpu_times()
        finally:
            rc = p.stop()
        res["machine_cpu"] = cpu_delta(m0, m1)
        if warm is not None:
            res["warmup"] = {"n": warmup, "ok": warm.get("ok"),
                             "conn_per_s": warm.get("conn_per_s")}
        ok = res.get("ok")
        if ok:
            res["loadgen_cpu_us_per_conn"] = res["machine_cpu"]["children_cpu_s"] / ok * 1e6
            if before["cpu_s"] is not None and after["cpu_s"] is not None:
                res["server_cpu_us_per_conn"] = (after["cpu_s"] - before["cpu_s"]) / ok * 1e6
                res["server_user_cpu_us_per_conn"] = (after["user_s"] - before["user_s"]) / ok * 1e6
        res["server_exit"] = rc
        res["server_counters"] = p.last_json()
        if rc != 0:
            res["server_stderr_tail"] = p.stderr_text()[-800:]
        return res

    def rounds(self, targets: dict, port_mode_n_c: dict, rounds: int) -> dict:
        """``rounds`` rounds; in each every target once, in an order rotated per round."""
        names = list(targets)
        out = {k: [] for k in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                port, mode, n, c, *warm = port_mode_n_c[name]
                res = self.measure(targets[name], port, mode, n, c,
                                   warm[0] if warm else self.p.warmup_n)
                self.log(f"  round {r + 1}/{rounds} {name}: {res['ok']}/{res['started']} ok, "
                         f"{res['conn_per_s']} conn/s, connect p50 {res['connect_ms']['p50']} ms")
                out[name].append(res)
        return out

    # --- item 1 -------------------------------------------------------------------------
    def item_handshake(self) -> dict:
        p = self.p
        targets, how = self._responders("hello", p.hello_n, p.hello_c, quiet=True)
        targets.update({"kernel": lambda: self.kernel("hello", PORT_KERNEL_HELLO),
                        "scapy": lambda: self.scapy(PORT_SCAPY)})
        how.update({"kernel": (PORT_KERNEL_HELLO, "hello", p.hello_n, p.hello_c),
                    # Scapy needs no JIT warm-up, and at ~200 conn/s a full one takes long
                    "scapy": (PORT_SCAPY, "hello", p.scapy_n, p.hello_c,
                              min(p.warmup_n, p.scapy_n // 5))})
        with self.rst_rule(PORT_SCAPY):
            res = self.rounds(targets, how, p.rounds)
        return {"n": p.hello_n, "c": p.hello_c, "scapy_n": p.scapy_n, "warmup_n": p.warmup_n,
                "runtimes": list(self.runtimes), "results": res}

    def _responders(self, app: str, n: int, c: int, quiet: bool = False) -> tuple:
        """The responder under each runtime as load targets: ``({key: start}, {key: how})``;
        ``quiet``: also the last runtime (PyPy when asked for) with the quiet kernel."""
        targets, how = {}, {}
        mode = "http" if app == "http" else "hello"
        for rt in self.runtimes:
            targets[subject(rt)] = lambda rt=rt: self.responder(app, runtime=rt)
            how[subject(rt)] = (LAB_PORT, mode, n, c)
        if quiet:
            rt = self.runtimes[-1]
            targets[subject(rt, True)] = lambda: self.responder(app, runtime=rt, quiet=True)
            how[subject(rt, True)] = (LAB_PORT, mode, n, c)
        return targets, how

    def rst_rule(self, port: int):
        """The Scapy responder's own RST block, in the VM namespace, for the ``with`` body."""
        self.log(f"  RST rule for port {port} in {self.b.vm_ns}")
        return Firewall(local(self.b.vm_exec_prefix())).applied([port_rst_rule(port)],
                                                                first=True)

    # --- item 2 -------------------------------------------------------------------------
    def item_http(self) -> dict:
        p = self.p
        targets, how = self._responders("http", p.http_n, p.http_c)
        targets.update({"http.server": lambda: self.kernel("http", PORT_HTTP_SERVER),
                        "asyncio": lambda: self.kernel("http-asyncio", PORT_HTTP_ASYNCIO)})
        how.update({"http.server": (PORT_HTTP_SERVER, "http", p.http_n, p.http_c),
                    "asyncio": (PORT_HTTP_ASYNCIO, "http", p.http_n, p.http_c)})
        return {"n": p.http_n, "c": p.http_c, "warmup_n": p.warmup_n,
                "runtimes": list(self.runtimes), "results": self.rounds(targets, how, p.rounds)}

    # --- item 3 -------------------------------------------------------------------------
    def item_checksum(self) -> dict:
        return micro.run(self.p.rounds, self.p.micro_iters)

    # --- item 4 -------------------------------------------------------------------------
    def hold(self, start, port: int) -> dict:
        """Start a server, let the generator open and hold N connections, sample the server's
        RSS and CPU before, while holding, after release; stop it."""
        p = self.p
        srv = start()
        gen = None
        try:
            time.sleep(0.2)
            before = proc_status(srv.pid)
            argv = self.loadgen_argv(port, "hold", p.tarpit_n, p.tarpit_c)
            argv += ["--hold-seconds", "60"]
            t0 = time.monotonic()
            gen = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            holding = _read_event(gen, "holding", p.budget_s + p.conn_timeout_s + 30)
            connect_s = time.monotonic() - t0
            time.sleep(0.3)            # let the last ACKs and any lazy allocation land
            during = proc_status(srv.pid)
            time.sleep(p.hold_s)       # holding, nothing else: what does it cost per second?
            held_end = proc_status(srv.pid)
            gen.stdin.write("release\n")
            gen.stdin.flush()
            done = _read_event(gen, "done", 30)
            time.sleep(0.3)
            after = proc_status(srv.pid)
        finally:
            if gen is not None and gen.poll() is None:
                gen.kill()
            if gen is not None:
                gen.wait(5)
            rc = srv.stop()
        mb = 1024.0
        return {"held": holding["held"], "errors": holding["errors"],
                "connect_s": round(connect_s, 3), "conn_per_s": holding["conn_per_s"],
                "rss_before_mb": before["rss_kb"] / mb, "rss_holding_mb": during["rss_kb"] / mb,
                "rss_after_mb": after["rss_kb"] / mb,
                "rss_growth_mb": (during["rss_kb"] - before["rss_kb"]) / mb,
                "peak_rss_mb": during["hwm_kb"] / mb,
                "cpu_s": during["cpu_s"] - before["cpu_s"], "release_s": done.get("release_s"),
                "hold_s": p.hold_s,
                "cpu_holding_share": (held_end["cpu_s"] - during["cpu_s"]) / p.hold_s,
                "rss_end_of_hold_mb": held_end["rss_kb"] / mb,
                "server_exit": rc, "server_counters": srv.last_json()}

    def item_tarpit(self) -> dict:
        targets = {"tcplab": (lambda: self.responder("tarpit"), LAB_PORT),
                   "kernel": (lambda: self.kernel("hold", PORT_HOLD), PORT_HOLD)}
        out = {k: [] for k in targets}
        names = list(targets)
        for r in range(self.p.tarpit_rounds):
            for name in names[r % 2:] + names[:r % 2]:
                res = self.hold(*targets[name])
                self.log(f"  round {r + 1}/{self.p.tarpit_rounds} {name}: held {res['held']}, "
                         f"RSS +{res['rss_growth_mb']:.2f} MB, CPU {res['cpu_s']:.2f} s")
                out[name].append(res)
        return {"n": self.p.tarpit_n, "c": self.p.tarpit_c, "results": out}

    # --- item 6 -------------------------------------------------------------------------
    def item_profile(self) -> dict:
        return profiling.item_profile(self)

    # --- item 5 -------------------------------------------------------------------------
    def item_lab(self, backends: list[str], scratch_prefix: str, first_up: dict) -> dict:
        """:func:`bench.lab.item` on this bench's lab; the bare ``nc``'s peer is the kernel
        hello server."""
        return lab.item(self.b, self.p, backends, scratch_prefix, first_up,
                        hello=(lambda: self.kernel("hello", PORT_KERNEL_HELLO),
                               PORT_KERNEL_HELLO))


def _read_event(proc: subprocess.Popen, event: str, timeout: float) -> dict:
    """Read the generator's JSON lines until one has ``"event": event``."""
    import selectors
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                raise LabError(f"load generator exited {proc.poll()} before '{event}'")
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("event") == event:
                    return obj
    finally:
        sel.close()
    raise LabError(f"load generator: no '{event}' within {timeout:g} s")


# --- the whole run --------------------------------------------------------------------------

#: The order the items run in (the table's order is report.ITEMS).
RUN_ORDER = ("checksum", "handshake", "http", "tarpit", "profile", "lab", "labs", "grading")


def run_bench(*, quick: bool = False, prefix: str | None = None, backends=("netns",),
              rounds: int | None = None, only: list[str] | None = None,
              runtimes=("cpython", "pypy"), results_dir: Path = RESULTS_DIR,
              log=progress) -> tuple[dict, Path, Path | None]:
    """Run the benchmark; returns (result, json path, plot path).  Never leaves a lab."""
    require_root("invoke bench")
    runtimes = check_runtimes(runtimes)
    params = QUICK if quick else FULL
    if rounds:
        params = replace(params, rounds=rounds)
    items = _items_to_run(quick, only)
    prefix = prefix or f"bench{uuid.uuid4().hex[:4]}"
    scratch = f"{prefix[:8]}lu"
    started = datetime.now(timezone.utc)
    # the run's name: of its JSON, its plot and its kept profiles
    name = started.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    result = {"version": 1, "started": started.isoformat(timespec="seconds"), "quick": quick,
              "rounds": params.rounds, "params": asdict(params), "prefix": prefix,
              "runtimes": list(runtimes),
              "machine": machine_info(), "git": git_info(), "items": {}}
    t_all = time.monotonic()
    backend = get_backend("netns", prefix)
    if backend.exists():
        raise LabError(f"lab '{prefix}' exists already: the benchmark makes (and removes) a "
                       f"lab of its own; choose another --prefix")
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        final_down = None
        try:
            log(f"bench: making lab '{prefix}' with `invoke up` (timed: item lab)")
            first_up = timed_invoke(["up", "--prefix", prefix], timeout=600)
            result["bench_lab"] = {"up_s": first_up["wall_s"], "steps": first_up["steps"]}
            b = Bench(backend, params, Path(tmp), log, keep_as=results_dir / name,
                      runtimes=runtimes)
            _run_items(result["items"], items, log, {
                "checksum": b.item_checksum, "handshake": b.item_handshake,
                "http": b.item_http, "tarpit": b.item_tarpit, "profile": b.item_profile,
                "lab": lambda: b.item_lab(list(backends), scratch, first_up),
                "labs": lambda: LabsBench(timed_invoke, log, params.labs_small,
                                          params.labs_big).run(),
                "grading": lambda: grading.item(quick, log)})
            log(f"bench: removing lab '{prefix}' with `invoke down` (timed: item lab)")
            final_down = timed_invoke(["down", "--prefix", prefix], timeout=120)
        finally:
            backend.down()                      # a no-op after a clean `invoke down`
            for be in backends:
                try:
                    get_backend(be, scratch).down()
                except LabError:
                    pass
    return _finish(result, final_down, t_all, results_dir / f"{name}.json")


def _items_to_run(quick: bool, only: list[str] | None) -> list[str]:
    """``only``, or every item; a LabError names an unknown one."""
    # --quick is CI's smoke test: item grading (minutes: labs of its own) only when asked for
    items = list(only or [i for i in ITEMS if not (quick and i == "grading")])
    unknown = set(items) - set(ITEMS)
    if unknown:
        raise LabError(f"unknown bench item(s) {', '.join(sorted(unknown))}; "
                       f"choose from {', '.join(ITEMS)}")
    return items


def _run_items(results: dict, items: list[str], log, steps: dict) -> None:
    """Run ``steps[name]()`` for each of ``items`` in RUN_ORDER into ``results[name]``, with
    its seconds; an item that raises is reported there (its error and traceback), and the
    others still run."""
    for name in RUN_ORDER:
        if name not in items:
            continue
        log(f"bench: item {name}")
        t0 = time.monotonic()
        try:
            results[name] = steps[name]()
        except Exception as e:          # noqa: BLE001 -- an item's failure is reported
            results[name] = {"error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()[-3000:]}
            log(f"bench: item {name} failed: {e}")
        results[name]["seconds"] = round(time.monotonic() - t0, 2)


def _finish(result: dict, final_down: dict | None, t_all: float,
            out: Path) -> tuple[dict, Path, Path | None]:
    """Complete ``result`` (the bench lab's final ``invoke down`` in item lab, the end, the
    rows), write it to ``out`` and plot it beside."""
    lab_item = result["items"].get("lab", {})
    if final_down and "backends" in lab_item:
        lab_item["backends"]["netns"]["down"].append(final_down)
    result["machine"]["loadavg_after"] = _loadavg()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds"] = round(time.monotonic() - t_all, 1)
    result["comparisons"] = comparisons(result["items"])
    write_json(result, out)
    png = plot(result, out.with_suffix(".png"))
    return result, out, png


def render(result: dict) -> str:
    parts = [format_machine(result), "", format_table(result)]
    for extra in (format_missed(result), format_errors(result)):
        if extra:
            parts += ["", extra]
    acc = result.get("items", {}).get("profile", {}).get("account", {})
    if any(k.startswith("tcplab") or k == "kernel" for k in acc):
        parts += ["", profiling.format_account(acc)]
    prof = result.get("items", {}).get("profile", {}).get("tcplab", {})
    if prof.get("top_tottime"):
        parts += ["", f"profile of the responder (hello, {prof['connections']} connections, "
                      f"{prof.get('busy_us_per_conn')} us busy per connection, "
                      f"{prof.get('busy_us_per_segment')} us per segment, under cProfile); "
                      f"top own time:"]
        parts.append("  by module: " + ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in prof.get("by_module_share", {}).items()))
        for r in prof["top_tottime"][:8]:
            parts.append(f"  {r['tottime_s']:8.3f} s  {100 * (r['share_of_busy'] or 0):5.1f}%  "
                         f"{r['ncalls']:>8}  {r['function']}")
    return "\n".join(parts)


def run_and_print(*, quick: bool = False, backend: str = "netns", prefix: str | None = None,
                  rounds: int = 0, only: str = "", runtime: str = "cpython,pypy",
                  profile: bool = False) -> dict:
    """What ``invoke bench`` does: run, print the table, say where the files are."""
    backends = ["netns"] + ([backend] if backend != "netns" else [])
    items = [s.strip() for s in only.split(",") if s.strip()] or None
    if profile:
        items = sorted(set(items or []) | {"profile"}, key=ITEMS.index)
    runtimes = [s.strip() for s in runtime.split(",") if s.strip()]
    if not runtimes:
        raise LabError(f"--runtime: name at least one of {', '.join(RUNTIMES)}")
    result, path, png = run_bench(quick=quick, prefix=prefix, backends=backends,
                                  rounds=rounds or None, only=items, runtimes=runtimes)
    print(render(result))
    print(f"\nresults: {os.path.relpath(path)}" + (f", plot: {os.path.relpath(png)}" if png
                                                    else " (no plot: matplotlib missing)"))
    print(f"bench took {result['seconds']} s")
    return result
