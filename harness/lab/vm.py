"""What the backends with a real VM (qemu, vagrant-libvirt) share: the KVM trial.

``/dev/kvm`` existing proves nothing (on a nested, paravirtual KVM it exists but a Debian guest
never boots), so :func:`kvm_usable` boots the guest kernel under KVM until it runs its first
userspace program, once per (host kernel, qemu binary, guest image), and caches the verdict
next to the images.  ``TCPLAB_QEMU_ACCEL=kvm|tcg`` skips the trial.

(Pid files, which these backends also share, are read through the lab's state:
:meth:`harness.lab.state.LabState.live_pid`.)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from harness.lab import image
from harness.util import progress

QEMU = "qemu-system-x86_64"
KVM_TRIAL_TIMEOUT = 12        # a working KVM reaches the guest's init in ~1 s; TCG in ~6 s
ACCEL_ENV = "TCPLAB_QEMU_ACCEL"   # kvm|tcg: skip the trial (e.g. a CI runner known to have KVM)


def kvm_usable(img: Path) -> tuple[bool, str]:
    """Boot the guest kernel under KVM until it runs its first userspace program, once per
    (host kernel, qemu, guest kernel); the answer is cached next to the images."""
    if os.environ.get(ACCEL_ENV) in ("kvm", "tcg"):
        return os.environ[ACCEL_ENV] == "kvm", f"{ACCEL_ENV}={os.environ[ACCEL_ENV]}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    qemu = shutil.which(QEMU) or QEMU
    key = hashlib.sha256(json.dumps([platform.release(), platform.version(),
                                     os.stat(qemu).st_mtime, str(img)]).encode()).hexdigest()
    cache = image.cache_root() / "kvm-trial.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]["usable"], known[key]["why"] + " (cached trial)"
    progress(f"trying KVM: booting the guest kernel for up to {KVM_TRIAL_TIMEOUT} s")
    t0 = time.monotonic()
    cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
           "-display", "none", "-serial", "stdio", "-no-reboot",
           "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img"),
           "-append", "console=ttyS0 panic=-1 rdinit=/bin/true"]
    try:
        # stdin from /dev/null: with -serial stdio qemu makes stdin non-blocking, on the file
        # description this process shares (Ansible, run next, then refuses to start).
        res = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL,
                             timeout=KVM_TRIAL_TIMEOUT)
        out = res.stdout + res.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
    # rdinit=/bin/true exits at once, so the kernel panics "Attempted to kill init": that line
    # proves the CPU ran the kernel and a userspace program.
    usable = b"Attempted to kill init" in out
    why = (f"KVM trial boot reached userspace in {time.monotonic() - t0:.1f} s" if usable else
           f"/dev/kvm exists but a trial boot under KVM did not reach userspace within "
           f"{KVM_TRIAL_TIMEOUT} s ({len(out)} bytes of console output)")
    known[key] = {"usable": usable, "why": why}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=2) + "\n")
    return usable, why
