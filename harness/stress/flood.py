"""The full SYN flood on a lab (``invoke fuzz --flood N``, ``invoke bench --flood N``).

A hello responder, ``count`` spoofed-port SYNs from the lab's host side, and legitimate hello
clients during it (:func:`harness.stress.attack.syn_flood`); the responder's memory and
counters.  The lab is locked for the whole run (:func:`harness.stress.labs.locked_lab`).
"""

from __future__ import annotations

from harness.stress import attack
from harness.stress.labs import locked_lab


def flood_run(count: int = 100_000, prefix: str = "relflood", clients: int = 1000) -> dict:
    """The flood on lab ``prefix`` (made here unless it exists; removed at the end only if made
    here); the figures as a dict, ``ok`` when >= 90 % of the clients completed."""
    with locked_lab(prefix) as backend:
        with attack.Target(backend, "hello") as t:
            idle, _ = t.memory_kb()
            res = attack.syn_flood(backend, count, clients=clients, watch_pid=t.proc.pid)
            rss, peak = t.memory_kb()
            counters = t.counters()
    res.update(idle_rss_kb=idle, rss_kb=rss, peak_rss_kb=peak, counters=counters,
               completion=round(res["clients_ok"] / res["clients"], 3) if res["clients"] else None)
    res["ok"] = bool(res["clients"]) and res["completion"] >= 0.9
    return res
