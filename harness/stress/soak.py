"""A soak: many demos in a row in this process on one lab (``invoke fuzz --soak N``).

Each demo must match; after each, no tshark/dumpcap of the lab may be left and the number of
open file descriptors (after a garbage collection) must not grow.  The lab is locked for the
whole soak (:func:`harness.stress.labs.locked_lab`).
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

from harness.stress.labs import lab_processes, locked_lab, open_fds


def soak(count: int, prefix: str = "relsoak", scenario: str = "hello",
         runs_dir: Path | None = None) -> dict:
    """``count`` demos of ``scenario`` in a row on lab ``prefix`` (made here unless it exists;
    removed at the end only if made here); the figures as a dict, ``ok`` the verdict."""
    from harness.run.demo import run_demo
    runs_dir = runs_dir or Path(tempfile.mkdtemp(prefix="tcplab-soak-"))
    fds, failures, leftovers, seconds = [], [], [], []
    with locked_lab(prefix) as backend:
        for i in range(count):
            t0 = time.monotonic()
            res = run_demo(backend, scenario, runs_dir=runs_dir)
            seconds.append(time.monotonic() - t0)
            if not res.ok:
                failures.append(f"demo {i}: {res.reason}")
            left = lab_processes(backend)
            if left:
                leftovers.append(f"after demo {i}: {', '.join(left)}")
            gc.collect()
            fds.append(open_fds())
    return {"demos": count, "failures": failures, "leftover_captures": leftovers,
            "open_fds": fds, "fd_growth": fds[-1] - fds[0] if fds else 0,
            "demo_s_p50": round(sorted(seconds)[len(seconds) // 2], 2) if seconds else None,
            "ok": not failures and not leftovers and bool(fds) and fds[-1] <= fds[0]}
