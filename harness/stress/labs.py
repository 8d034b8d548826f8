"""What the long runs on a real lab share: a lab held for the whole run, and leftover checks.

:func:`locked_lab` takes the lab's lock (``Backend.locked()``) *before* anything touches the
lab -- up, provisioning, the run, and ``down`` at the end -- so a soak or a flood never
removes a lab another tcplab command is using, and never removes a lab it did not make.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

from harness.lab import get_backend
from harness.lab.provision import bring_up


@contextlib.contextmanager
def locked_lab(prefix: str, backend: str = "netns"):
    """The lab ``prefix``, locked, up and provisioned for the ``with`` body; removed afterwards
    only if this run made it.  LabError ("busy") when another tcplab command holds it."""
    b = get_backend(backend, prefix)
    with b.locked():
        existed = b.exists()
        try:
            bring_up(b)
            yield b
        finally:
            if not existed:
                b.down()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def lab_processes(backend, names=("tshark", "dumpcap")) -> list[str]:
    """Processes called ``names`` that belong to the lab: in its namespaces, children of this
    process, or mentioning its state directory."""
    from harness.util import pids_mentioning
    pids = set(pids_mentioning(str(backend.state_dir) + "/"))
    for ns in (getattr(backend, "host_ns", None), getattr(backend, "vm_ns", None)):
        if ns:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids |= {int(p) for p in out.stdout.split() if p.isdigit()}
    pids |= _children()
    found = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in names:
            found.append(f"{comm}[{pid}]")
    return found


def _children() -> set[int]:
    me, out = f"PPid:\t{os.getpid()}\n", set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    if me in f.read():
                        out.add(int(entry))
            except OSError:
                pass
    return out
