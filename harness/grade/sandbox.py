"""Where and how a submission runs: the sandbox on netns, plain root in a real guest.

On the **netns** backend the lab "VM" is this machine's kernel and filesystem, so a
submission (and its build) never runs as plain root.  Its command line becomes::

    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind WORK /tmp/submission
          --chdir /tmp/submission --unshare-pid --unshare-ipc --unshare-uts
          --die-with-parent --new-session --clearenv ...  --
      setpriv --reuid UID --regid UID --clear-groups --no-new-privs
              --inh-caps -all,+net_raw --ambient-caps -all,+net_raw --bounding-set -all,+net_raw --
      prlimit --cpu --as --nproc --nofile --fsize --core --
      PROGRAM

* a private mount namespace (bubblewrap) in which the whole filesystem is read-only except
  the submission's own work directory (``/tmp/submission``) and a private ``/tmp``;
* its own PID namespace: when the program's first process ends, or the sandbox is killed,
  the kernel kills everything it started (no orphan, no daemon);
* a dedicated unprivileged uid per lab (:func:`sandbox_uid`), so ``RLIMIT_NPROC`` bounds a
  fork bomb to that submission alone;
* only CAP_NET_RAW, as an ambient capability (``setpriv``), and only for running: a build gets
  none.  No user namespace: a raw socket in the lab's network namespace needs CAP_NET_RAW in
  the initial user namespace.  SO_MARK works with CAP_NET_RAW alone on Linux >= 5.17;
* limits (``prlimit``): CPU seconds, address space, processes, open files, file size, no
  core dumps (:class:`Limits`); the grader adds a wall-clock limit per lesson and per
  submission.

The program stays in the lab's network namespace (the build gets none at all:
``--unshare-net``).  On **qemu/vagrant** the program runs as root inside the guest, with the
same ``prlimit`` limits: the guest is the isolation (its own kernel, disk and memory).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from dataclasses import dataclass

from harness.util import LabError

#: Inside the sandbox, the submission's work directory (a bind mount of the real one).
SANDBOX_WORKDIR = "/tmp/submission"
#: Dedicated uids: UID_BASE + a hash of the lab prefix (no passwd entry needed or made).
UID_BASE = 1_900_000_000
UID_SPAN = 1_000_000
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
TOOLS = ("bwrap", "setpriv", "prlimit")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one process tree (``prlimit``); ``nproc`` counts the sandbox uid's
    processes and threads, system-wide -- hence a uid per lab."""

    cpu_s: int = 30
    address_space: int = 512 << 20
    nproc: int = 32
    nofile: int = 256
    file_size: int = 64 << 20

    def prlimit_argv(self) -> list[str]:
        return ["prlimit", f"--cpu={self.cpu_s}", f"--as={self.address_space}",
                f"--nproc={self.nproc}", f"--nofile={self.nofile}",
                f"--fsize={self.file_size}", "--core=0", "--"]

    def describe(self) -> str:
        return (f"{self.cpu_s} s CPU, {self.address_space >> 20} MiB address space, "
                f"{self.nproc} processes, {self.nofile} open files, "
                f"{self.file_size >> 20} MiB per file")


#: A lesson's program; a build (gcc's cc1 wants more room, never a raw socket).
RUN_LIMITS = Limits()
BUILD_LIMITS = Limits(cpu_s=60, address_space=2048 << 20, nproc=64, nofile=512,
                      file_size=256 << 20)


def require_sandbox_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"grading on netns needs {', '.join(missing)} (Debian packages "
                       f"bubblewrap and util-linux); install them with `sudo ./bootstrap`")


def _uid_in_use(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    return True
            except OSError:
                continue
    return False


def sandbox_uid(prefix: str) -> int:
    """The unprivileged uid (= gid) a lab's submissions run as: derived from the prefix, in a
    range no distribution allocates, and checked unused (no account, no process)."""
    base = int(hashlib.sha256(prefix.encode()).hexdigest()[:8], 16) % UID_SPAN
    for k in range(64):
        uid = UID_BASE + (base + k) % UID_SPAN
        if not _uid_in_use(uid):
            return uid
    raise LabError(f"no free sandbox uid near {UID_BASE + base} for lab '{prefix}'")


def bwrap_argv(workdir: str, uid: int, argv: list[str], limits: Limits, *, raw: bool,
               network: bool) -> list[str]:
    """``argv`` in the sandbox (see the module docstring).  ``raw``: keep CAP_NET_RAW (a
    lesson's program); ``network``: stay in the current network namespace (else none)."""
    caps = "-all,+net_raw" if raw else "-all"
    box = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
           "--perms", "1777", "--tmpfs", "/tmp", "--bind", workdir, SANDBOX_WORKDIR,
           "--chdir", SANDBOX_WORKDIR, "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--die-with-parent", "--new-session", "--clearenv",
           "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", SANDBOX_WORKDIR,
           "--setenv", "LANG", "C.UTF-8", "--setenv", "TMPDIR", "/tmp"]
    if not network:
        box.append("--unshare-net")
    box += ["--", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--no-new-privs", f"--inh-caps={caps}", f"--ambient-caps={caps}",
            f"--bounding-set={caps}", "--"]
    return box + limits.prlimit_argv() + list(argv)


def guest_argv(argv: list[str], limits: Limits) -> list[str]:
    """``argv`` as root in a real guest, under the same limits (the guest is the isolation)."""
    return limits.prlimit_argv() + list(argv)
