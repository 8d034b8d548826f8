"""Item 5 of ``invoke bench``, ``lab``: how long the lab's own commands take (item 7, many labs
at once, is :mod:`bench.labs`).

* ``invoke up`` from nothing and ``invoke down``: the bench lab's own first ``up`` (made by
  :func:`bench.runner.run_bench`, which adds its final ``down``), then more rounds on a second,
  scratch lab; against the same run's bare cost of a lab's network (:func:`netns_floor`: two
  namespaces and a veth pair with ``ip`` alone).
* with ``--backend qemu``: ``up``/``down`` warm (resuming the saved, provisioned guest) and from
  nothing (a snapshot directory of the bench's own), against the same run's netns ones (another
  backend: one ``up`` and ``down``).
* ``invoke demo`` on the warm bench lab, against a bare ``nc`` exchange with the kernel hello
  server.
* the step shares of each: ``up``'s progress lines timed as ``invoke`` prints them
  (:func:`timed_invoke`, :func:`up_steps`), the demo's own timings from its result.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from harness.lab import get_backend, net
from harness.lab.provision import bring_up
from harness.util import PROJECT_ROOT, LabError, stream

from .labs import bare_network
from .stats import shares

INVOKE = [sys.executable, "-m", "invoke"]


def item(bench_lab, params, backends: list[str], scratch_prefix: str, first_up: dict,
         hello: tuple) -> dict:
    """Item 5 on ``bench_lab`` (the bench's warm netns lab, a backend) with the bench's
    ``params`` (``lab_rounds``, ``demo_rounds``); ``hello`` is ``(start, port)`` of the kernel
    hello server, the bare ``nc``'s peer.  ``first_up`` is the bench lab's own ``invoke up``
    from nothing; more rounds use a scratch lab.  The bench lab's final ``invoke down`` is
    added by :func:`bench.runner.run_bench`."""
    out = {"rounds": params.lab_rounds, "shares": {},
           "backends": {"netns": {"up": [first_up], "down": []}}}
    out["floor"] = [netns_floor(scratch_prefix) for _ in range(params.lab_rounds)]
    nb = out["backends"]["netns"]
    if params.lab_rounds > 1:
        more = lab_cycle("netns", scratch_prefix, params.lab_rounds - 1)
        nb["up"] += more["up"]
        nb["down"] += more["down"]
    for be in backends:
        if be != "netns":
            try:
                out["backends"][be] = (qemu_cycles(scratch_prefix, params.lab_rounds)
                                       if be == "qemu" else lab_cycle(be, scratch_prefix, 1))
            except Exception as e:          # noqa: BLE001 -- one backend failing is data
                out["backends"][be] = {"error": f"{type(e).__name__}: {e}"}
    # A warm lab: if the responder's sources changed since the lab was provisioned (someone
    # is editing them), the demo would re-provision first; do that here, untimed.
    out["warm_up"] = bring_up(bench_lab)["timings"]
    out["demo"] = [_guarded(lambda: demo_once(bench_lab.prefix))
                   for _ in range(params.demo_rounds)]
    out["nc_alone"] = [_guarded(lambda: nc_alone(bench_lab, *hello))
                       for _ in range(params.demo_rounds)]
    for be, res in out["backends"].items():
        if res.get("up"):
            out["shares"][f"invoke up ({be})"] = _mean_shares([u["steps"] for u in res["up"]])
    demos = [d["steps"] for d in out["demo"] if "steps" in d]
    if demos:
        out["shares"]["invoke demo (warm)"] = _mean_shares(demos)
    errors = [d["error"] for d in out["demo"] if "error" in d]
    if errors:
        out["demo_errors"] = errors
    return out


def lab_cycle(backend: str, prefix: str, rounds: int, env=None) -> dict:
    """``invoke up`` from nothing, then ``invoke down``, ``rounds`` times."""
    get_backend(backend, prefix)          # LabError if the backend does not exist here
    res = {"up": [], "down": []}
    try:
        for _ in range(rounds):
            res["up"].append(timed_invoke(["up", "--backend", backend, "--prefix", prefix],
                                          timeout=1800 if backend != "netns" else 300,
                                          env=env))
            res["down"].append(timed_invoke(["down", "--backend", backend, "--prefix",
                                             prefix], timeout=300, env=env))
    finally:
        get_backend(backend, prefix).down()
    return res


def qemu_cycles(prefix: str, rounds: int) -> dict:
    """``invoke up``/``down --backend qemu`` (``rounds``, at most 3, each): warm (the shared
    snapshot of a provisioned guest exists; made first, untimed, when it does not) and
    from nothing (a snapshot directory of the bench's own, empty each round: boot,
    playbook, save, resume), under keys ``up``/``down`` and ``up_cold``/``down_cold``."""
    from harness.lab import image
    from harness.lab.snapshot import SNAPSHOTS_ENV
    n = min(rounds, 3)
    lab_cycle("qemu", prefix, 1)                # the warm snapshot, untimed
    res = lab_cycle("qemu", prefix, n)
    cold = {"up_cold": [], "down_cold": []}
    for _ in range(n):
        snaps = image.cache_root().parent / f"bench-snapshots-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, **{SNAPSHOTS_ENV: str(snaps)})
        try:
            one = lab_cycle("qemu", prefix, 1, env=env)
        finally:
            shutil.rmtree(snaps, ignore_errors=True)
        cold["up_cold"] += one["up"]
        cold["down_cold"] += one["down"]
    return dict(res, **cold)


def netns_floor(prefix: str) -> dict:
    """The bare cost of a lab's network: two namespaces and a veth pair made and removed
    with ``ip`` alone (the reference for ``invoke up``/``down``).  Only the namespaces
    made here are deleted: one that exists already is someone else's, and is refused."""
    h, v = f"{prefix}f-host", f"{prefix}f-vm"
    taken = {h, v} & net.namespaces()
    if taken:
        raise LabError(f"namespace(s) {', '.join(sorted(taken))} exist already: the bench "
                       f"makes its own; remove them or choose another --prefix")
    made: list = []
    t0 = time.monotonic()
    try:
        bare_network(h, v, made)
        t1 = time.monotonic()
    finally:
        t2 = time.monotonic()
        for ns in made:
            net.ns_del(ns)
        t3 = time.monotonic()
    return {"up_s": t1 - t0, "down_s": t3 - t2}


def demo_once(prefix: str) -> dict:
    """``invoke demo`` on the warm lab ``prefix``, timed from outside; its own timings from
    the run's result.json give the shares.  The run folder is removed afterwards."""
    r = timed_invoke(["demo", "--prefix", prefix], timeout=120, capture_stdout=True)
    run_dir = None
    for line in r.pop("stdout", "").splitlines():
        if line.startswith("run folder: "):
            run_dir = PROJECT_ROOT / line.split(": ", 1)[1].strip()
    t = {}
    if run_dir and (run_dir / "result.json").exists():
        data = json.loads((run_dir / "result.json").read_text())
        # the demo's own step timings sit under "run" (the top-level "timings" are the
        # capture's: packets, duration, SYN,ACK delay)
        t = data.get("run", {}).get("timings") or {}
        r["capture_timings"] = data.get("timings", {})
    if run_dir and run_dir.is_dir() and run_dir.parent.name == "runs":
        shutil.rmtree(run_dir, ignore_errors=True)
    r["timings"] = t
    if t.get("demo_s") is not None:
        lab = t.get("up_s", 0) + t.get("provision_s", 0)
        parts = {"lab check": lab, "responder start (SSH)": t.get("responder_start_s", 0),
                 "capture live": t.get("capture_live_s", 0),
                 "client (nc)": t.get("client_s", 0)}
        parts["stop capture+responder"] = max(0.0, t["demo_s"] - sum(
            v for k, v in parts.items() if k != "lab check"))
        parts["start, dissect, match, report"] = max(0.0, r["wall_s"] - lab - t["demo_s"])
        r["steps"] = parts
    else:
        r["steps"] = {"invoke demo": r["wall_s"]}
    return r


def nc_alone(bench_lab, start, port: int) -> dict:
    """The same hello exchange with a bare ``nc`` from the lab's host namespace against the
    kernel hello server (``start()`` starts it on ``port``): what the demo's exchange costs
    without the harness around it."""
    srv = start()
    try:
        t0 = time.monotonic()
        r = subprocess.run(bench_lab.host_exec_prefix() + ["nc", "-w", "5", bench_lab.vm_ip,
                                                           str(port)],
                           input=b"", capture_output=True, timeout=20)
        wall = time.monotonic() - t0
    finally:
        srv.stop()
    return {"wall_s": wall, "bytes": len(r.stdout), "rc": r.returncode}


def _guarded(fn) -> dict:
    """``fn()``, or {"error": ...} if it raised: one failed demo round is data, not the end."""
    try:
        return fn()
    except Exception as e:                      # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}




def timed_invoke(args: list[str], timeout: float, capture_stdout: bool = False,
                 env: dict | None = None) -> dict:
    """Run ``invoke ARGS`` as a user would (in environment ``env``, default this one), timing
    each progress line it prints on stderr ('tcplab: ...'), so the steps of ``up`` can be told
    apart."""
    marks = []
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.monotonic()
        r = stream(INVOKE + args, show=lambda line: marks.append((time.monotonic() - t0,
                                                                 line.rstrip())),
                   stdout=out if capture_stdout else subprocess.DEVNULL, timeout=timeout,
                   cwd=PROJECT_ROOT, what=f"invoke {' '.join(args)}", check=False, env=env)
        wall = time.monotonic() - t0
        out.seek(0)
        stdout = out.read()
    if r.returncode != 0:
        tail = " / ".join(m[1] for m in marks[-3:])
        raise LabError(f"`invoke {' '.join(args)}` exited {r.returncode}: {tail}")
    res = {"argv": args, "wall_s": wall, "marks": marks, "steps": up_steps(marks, wall)}
    if capture_stdout:
        res["stdout"] = stdout
    return res


def up_steps(marks: list, wall: float, min_share: float = 0.05) -> dict:
    """Group the timed progress lines of ``invoke up`` into steps: process start (until its
    first line), network, sshd (netns) or guest image and boot (qemu), Ansible's start
    (until its first task), then each
    Ansible task ('TASK [role : name]') that takes at least ``min_share`` of the wall time,
    the others together as 'Ansible: other tasks'."""
    steps: dict = {}
    prev_t, prev_step = 0.0, "process start"
    for t, line in marks + [(wall, "tcplab: <end>")]:
        text = line.removeprefix("tcplab: ").strip()
        if text.startswith(("namespace", "veth")):
            step = "network (namespaces, veth/tap)"
        elif text.startswith("guest image"):
            step = "guest image"
        elif text.startswith("no snapshot"):
            step = "snapshot: boot until sshd answers"   # then its playbook's tasks
        elif text.startswith(("resuming", "guest resumed")):
            step = "resume the snapshot, rotate the lab's keys"
        elif text.startswith(("accelerator", "booting")):
            step = "boot until sshd answers"        # qemu: the waiting lines stay in it
        elif text.startswith("sshd"):
            step = "sshd"
        elif text.startswith("provisioning"):
            step = "Ansible: start"
        elif text.startswith("TASK ["):
            step = "Ansible: " + text[6:].rstrip("]").split(" : ", 1)[-1]
        elif text == "<end>":
            step = None
        else:
            step = prev_step
        steps[prev_step] = steps.get(prev_step, 0.0) + (t - prev_t)
        prev_t, prev_step = t, step
    out: dict = {}
    for k, v in steps.items():
        if k.startswith("Ansible: ") and k != "Ansible: start" and wall and v / wall < min_share:
            k = "Ansible: other tasks"
        out[k] = out.get(k, 0.0) + v
    return out


def _mean_shares(step_dicts: list[dict]) -> dict:
    keys = []
    for d in step_dicts:
        keys += [k for k in d if k not in keys]
    mean = {k: sum(d.get(k, 0.0) for d in step_dicts) / len(step_dicts) for k in keys}
    return shares(mean)
