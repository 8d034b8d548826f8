"""Can this machine hold N more labs?  Checked before any lab is made (``invoke up --labs N``,
a pool), from what a lab costs -- measured on this project's machine -- and what the machine
has left, read now.  A request that does not fit fails at once with the figures and the
reason, instead of half-way with a lab that cannot start.

What a netns lab costs, measured here (2 cores, 24 GB, Debian 12; docs/bench.md "Labs at
scale" has the runs):

* memory while the labs are made: the one playbook run holds a Mitogen connection to every
  lab until the play ends -- two Pythons in each lab VM (~16 MB PSS each), its SSH session,
  ssh and the ProxyCommand here -- and Ansible's workers: the PSS of everything the run added
  peaked at 49.7 MB per lab for 40 labs, 47.9 for 100, 41.3 for 200 (8.25 GB):
  :data:`MB_PER_LAB_MAKING`.  That is what runs out first: ~400 labs on this machine;
* memory of an idle lab afterwards: sshd 1.2-1.3 MB PSS, the kernel's 0.55-0.77 MB (Slab,
  stacks, page tables: namespaces, veth, nf_tables), the state directory 0.46 MB (memory when
  ``/run`` is a tmpfs): :data:`MB_PER_LAB`;
* processes: 10.2-11.2 tasks per lab at the run's peak; a demo adds its SSH session, the
  responder, the client, the capture and a dissecting tshark: :data:`TASKS_PER_LAB`, against
  ``kernel.pid_max``/``threads-max`` less what runs now (and a cgroup's ``pids.max``);
* file descriptors of ansible-playbook: 176, 283 and 488 for 40, 100 and 200 labs
  (:data:`FDS_PER_LAB`), against ``RLIMIT_NOFILE``;
* network namespaces: two per lab, against ``user.max_net_namespaces``.

The largest N made here at once: 200 (all provisioned; 6.5 min on 2 cores that other work kept
at load 25-30); larger was not tried, to keep the shared machine usable.  The qemu and vagrant
backends' guests take their memory (:data:`QEMU_MB`) each.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from harness.util import LabError

#: An idle netns lab (sshd, kernel, state directory; rounded up).
MB_PER_LAB = 4
#: A lab while the playbook run that makes it lasts (its connection, Ansible's share).
MB_PER_LAB_MAKING = 50
#: ansible-playbook itself and Mitogen's multiplexer.
CONTROLLER_MB = 300
#: Tasks (processes and threads) a lab uses at its busiest.
TASKS_PER_LAB = 16
#: Open files of ansible-playbook per lab during the run.
FDS_PER_LAB = 4
#: A guest's memory (harness.lab.qemu.GUEST_MEMORY_MB) plus qemu's own.
QEMU_MB = 1024 + 200
#: Keep this share of every resource free for the rest of the machine.
HEADROOM = 0.10


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return None if text == "max" else int(text) if text.isdigit() else None


def _meminfo_mb(key: str) -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise LabError(f"/proc/meminfo has no {key}")


def _cgroup_dir() -> str | None:
    """This process's cgroup v2 directory (None on cgroup v1 only)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return "/sys/fs/cgroup" + line[3:].rstrip("/")
    except OSError:
        pass
    return None


def resources() -> dict:
    """What this machine has left now: memory (MB), tasks, open files, network namespaces."""
    mem = _meminfo_mb("MemAvailable")
    cg = _cgroup_dir()
    limits = {}
    if cg:
        for key, name in (("memory.max", "memory"), ("pids.max", "pids")):
            limit, now = _read_int(f"{cg}/{key}"), _read_int(
                f"{cg}/{key.replace('.max', '.current')}")
            if limit is not None and now is not None:
                limits[name] = limit - now
    if "memory" in limits:
        mem = min(mem, limits["memory"] / 1024 / 1024)
    tasks_now = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    task_limit = min(v for v in (_read_int("/proc/sys/kernel/pid_max"),
                                 _read_int("/proc/sys/kernel/threads-max")) if v)
    tasks = task_limit - tasks_now
    if "pids" in limits:
        tasks = min(tasks, limits["pids"])
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    netns_max = _read_int("/proc/sys/user/max_net_namespaces") or 0
    netns_now = len(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else 0
    return {"memory_mb": mem, "tasks": tasks, "nofile": nofile,
            "netns": netns_max - netns_now, "memory_from": "cgroup memory.max" if
            "memory" in limits and limits["memory"] / 1024 / 1024 <= mem else "MemAvailable"}


def need(n: int, guests: int = 0) -> dict:
    """What ``n`` more netns labs (and ``guests`` qemu/vagrant VMs) need at their busiest."""
    labs = n + guests
    return {"memory_mb": n * (MB_PER_LAB + MB_PER_LAB_MAKING) + guests * QEMU_MB
            + CONTROLLER_MB, "tasks": labs * TASKS_PER_LAB, "nofile": labs * FDS_PER_LAB + 256,
            "netns": 2 * n + guests}


WHY = {"memory_mb": ("MB of memory", "{have:.0f} MB available ({src})",
                     f"{MB_PER_LAB_MAKING} MB per lab while one playbook run makes them, "
                     f"{MB_PER_LAB} MB per idle lab"),
       "tasks": ("processes", "{have} more allowed (kernel.pid_max/threads-max less what runs, "
                 "or the cgroup's pids.max)", f"{TASKS_PER_LAB} per lab at its busiest"),
       "nofile": ("open files in one process", "RLIMIT_NOFILE {have} (`ulimit -n`)",
                  f"{FDS_PER_LAB} per lab in ansible-playbook"),
       "netns": ("network namespaces", "{have} more allowed (user.max_net_namespaces)",
                 "2 per lab")}


def check(new_labs: list) -> None:
    """LabError, before anything is made, when the machine cannot hold ``new_labs`` (backends
    not made yet) on top of what runs now: which resource, the figures, and how many labs fit."""
    check_count(sum(1 for b in new_labs if b.name == "netns"),
                sum(1 for b in new_labs if b.name in ("qemu", "vagrant")))


def check_count(n: int, guests: int = 0) -> None:
    """:func:`check` for ``n`` new netns labs and ``guests`` new VMs."""
    if not n and not guests:
        return
    have = resources()
    want = need(n, guests)
    for key, (what, has, cost) in WHY.items():
        usable = have[key] * (1 - HEADROOM)
        if want[key] > usable:
            fit = max_labs(have)
            raise LabError(
                f"{n + guests} more lab(s) need ~{want[key]:,.0f} {what} ({cost}); this "
                f"machine has {has.format(have=have[key], src=have['memory_from'])}, of which "
                f"tcplab leaves {HEADROOM:.0%} free: ask for at most {fit} lab(s) now"
                + (" (or raise the limit)" if key != "memory_mb" else ""))


def max_labs(have: dict | None = None) -> int:
    """How many more netns labs fit now, by the same rule as :func:`check`."""
    have = have or resources()
    lo, hi = 0, 100_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        want = need(mid)
        if all(want[k] <= have[k] * (1 - HEADROOM) for k in WHY):
            lo = mid
        else:
            hi = mid - 1
    return lo
