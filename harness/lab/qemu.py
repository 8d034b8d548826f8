"""The qemu backend: the lab VM is a real Debian 12 guest with its own kernel.

    <prefix>-host  vboxnet0 (tap) 192.168.56.1/24  ──virtio-net──  eth0 192.168.56.100/24  guest
                   (captures, nc, qemu itself)                      (sshd, iptables, responder)

The host side is the netns backend's host namespace (same name, same ProxyCommand, same
teardown), with a tap instead of a veth: qemu runs *inside* ``<prefix>-host`` and opens the tap
there, so the guest can reach 192.168.56.1 and nothing else, and the root namespace is never
touched.  The guest boots the cached image (:mod:`harness.image`) directly (``-kernel/-initrd``,
``root=/dev/vda``) through a per-lab qcow2 overlay, so the cached image stays clean.  The lab's
SSH host key, root's authorized key and the static network reach the guest through qemu's
fw_cfg, read by a unit in the image before sshd starts: known_hosts is strict from the first
connection and the image is never rebuilt per lab.

Acceleration: KVM only when a short trial boot under KVM reaches the guest's userspace (on a
nested, paravirtual KVM ``/dev/kvm`` exists but a Debian guest never boots), else TCG with 2
vCPUs.  The verdict is cached per host kernel, qemu binary and guest kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.lab import image
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab import NETMASK_BITS
from harness.lab.netns import NetnsBackend
from harness.util import LabError, kill_pids, pid_alive, progress, require_root, require_tools, run

QEMU = "qemu-system-x86_64"
TOOLS = (QEMU, "qemu-img", "ip", "ethtool", "nc", "ssh-keygen")
GUEST_MAC = "52:54:00:56:00:64"
GUEST_MEMORY_MB = 1024
TCG_CPUS = 2
BOOT_TIMEOUT = 240            # seconds to SSH; ~20 s measured under TCG with 2 vCPUs
KVM_TRIAL_TIMEOUT = 12        # a working KVM reaches the guest's init in ~1 s; TCG in ~6 s
ACCEL_ENV = "TCPLAB_QEMU_ACCEL"   # kvm|tcg: skip the trial (e.g. a CI runner known to have KVM)


def _guest_network(vm_ip: str, bits: int) -> str:
    """systemd-networkd config for the guest's lab NIC (no gateway: nowhere else to go)."""
    return (f"[Match]\nMACAddress={GUEST_MAC}\n\n[Network]\nAddress={vm_ip}/{bits}\n"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n")


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


def live_pid(pidfile: Path) -> int | None:
    """The PID in ``pidfile`` if that process is alive (daemons started by a lab)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


@dataclass
class QemuBackend(NetnsBackend):
    name: str = "qemu"

    vm_interface = "eth0"

    def responder_dir(self) -> str:
        return "/opt/tcplab"

    def inventory_vars(self) -> dict:
        # The image has every package baked in, and the guest has no route to a mirror.
        return {"tcplab_vm_manage_packages": False}

    # --- queries ----------------------------------------------------------------------------
    def _qemu_pid(self) -> int | None:
        return live_pid(self.state_dir / "qemu.pid")

    def _console_tail(self, lines: int = 15) -> str:
        try:
            text = (self.state_dir / "console.log").read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    # --- up ---------------------------------------------------------------------------------
    def up(self) -> None:
        """Image (cached), host namespace + tap, SSH material, overlay, qemu, wait for SSH.
        Idempotent: every step checks before it acts; a running guest is left alone.
        Provisioning (and removing a fresh lab whose making failed) is done by
        :func:`harness.provision.bring_up`, as for every backend."""
        require_root("invoke up --backend qemu")
        if self.host_ns in self._namespaces() and not self.meta_file.exists():
            raise LabError(f"namespace {self.host_ns} exists but was not made by tcplab (no "
                           f"{self.meta_file}); choose another --prefix")
        require_tools(*TOOLS)
        img = image.ensure_image()
        sd = self.state_dir
        sd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(sd, 0o700)
        for sub in ("ansible/cp", "ansible/tmp", "ansible/home"):
            (sd / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.write_meta(backend=self.name, prefix=self.prefix, host_ns=self.host_ns,
                        host_ip=self.host_ip, vm_ip=self.vm_ip, image=str(img))

        if self.host_ns not in self._namespaces():
            progress(f"namespace {self.host_ns} with tap {self.capture_interface}")
            run(["ip", "netns", "add", self.host_ns], what=f"ip netns add {self.host_ns}")
        ns = ["ip", "-n", self.host_ns]
        run(ns + ["link", "set", "lo", "up"], what="ip link set lo up")
        if run(ns + ["link", "show", self.capture_interface], check=False).returncode != 0:
            run(ns + ["tuntap", "add", "dev", self.capture_interface, "mode", "tap"],
                what=f"ip tuntap add {self.capture_interface}")
        run(ns + ["addr", "replace", f"{self.host_ip}/{NETMASK_BITS}", "dev",
                  self.capture_interface], what=f"ip addr {self.host_ip}")
        run(ns + ["link", "set", self.capture_interface, "up"], what="ip link set up")

        client_pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        host_pub = ensure_keypair(sd / "ssh_host_ed25519_key", f"tcplab-{self.prefix}-host")
        (sd / "authorized_keys").write_text(client_pub + "\n")
        write_known_hosts(sd / "known_hosts", self.vm_ip, host_pub)
        (sd / "guest.network").write_text(_guest_network(self.vm_ip, NETMASK_BITS))

        if self._qemu_pid() is None:
            self._start_qemu(img)
        # The guest's NIC does no checksum offload (csum=off below); this makes the host's own
        # packets leave the tap with final checksums too, so captures show no "incorrect" ones.
        run(self.host_exec_prefix() + ["ethtool", "-K", self.capture_interface, "tx", "off"],
            what=f"ethtool -K {self.capture_interface} tx off")
        self._wait_for_ssh()

    def _start_qemu(self, img: Path) -> None:
        sd = self.state_dir
        overlay = sd / "overlay.qcow2"
        if not overlay.exists():
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                 str(img / "rootfs.raw"), str(overlay)], what="qemu-img create (overlay)")
        kvm, why = kvm_usable(img)
        if kvm:
            accel = ["-accel", "kvm", "-cpu", "host", "-smp", "2"]
            progress(f"accelerator: KVM ({why})")
        else:
            accel = ["-accel", "tcg", "-smp", str(TCG_CPUS)]
            progress(f"accelerator: TCG, emulated CPUs, ~20 s to boot. Note: {why}")
        self.write_meta(accel="kvm" if kvm else "tcg", accel_reason=why)
        fw = lambda name, path: ["-fw_cfg", f"name=opt/tcplab/{name},file={path}"]  # noqa: E731
        cmd = [QEMU, "-name", f"tcplab-{self.prefix}", "-machine", "q35", *accel,
               "-m", str(GUEST_MEMORY_MB), "-nodefaults", "-no-user-config",
               "-display", "none", "-serial", f"file:{sd}/console.log",
               "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img"),
               # tsc=reliable: under TCG the vCPUs' TSCs look unsynchronised, and the fallback clock
               # (HPET, an emulated MMIO read per clock read) makes the guest several times slower.
               "-append", "root=/dev/vda rw net.ifnames=0 console=ttyS0 panic=-1 quiet "
                          "tsc=reliable",
               "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap",
               "-netdev", f"tap,id=lab,ifname={self.capture_interface},script=no,downscript=no",
               # No checksum/segmentation offload between guest and tap: every packet the guest
               # sends is complete on the wire, as the capture must see it.
               "-device", f"virtio-net-pci,netdev=lab,mac={GUEST_MAC},csum=off,guest_csum=off,"
                          f"gso=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,"
                          f"host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off",
               "-device", "virtio-rng-pci",
               *fw("ssh_host_ed25519_key", sd / "ssh_host_ed25519_key"),
               *fw("ssh_host_ed25519_key.pub", sd / "ssh_host_ed25519_key.pub"),
               *fw("authorized_keys", sd / "authorized_keys"),
               *fw("network", sd / "guest.network"),
               "-pidfile", str(sd / "qemu.pid"), "-daemonize"]
        progress(f"booting the guest (qemu in {self.host_ns}; console: {sd}/console.log)")
        # stdin from /dev/null: qemu makes its stdio non-blocking, and that flag lives on the
        # file description it would share with this process (Ansible then refuses to run).
        res = subprocess.run(self.host_exec_prefix() + cmd, stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=60)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise LabError(f"qemu did not start: {err.splitlines()[-1] if err else res.returncode}")
        self.write_meta(booted_at=time.time())

    def _wait_for_ssh(self) -> None:
        t0 = time.monotonic()
        last = t0
        while not self._ssh_banner():
            if self._qemu_pid() is None:
                raise LabError(f"qemu exited while the guest booted; console:\n"
                               f"{self._console_tail()}")
            if time.monotonic() - t0 > BOOT_TIMEOUT:
                raise LabError(f"the guest's sshd did not answer on {self.vm_ip}:22 within "
                               f"{BOOT_TIMEOUT} s; console ({self.state_dir}/console.log):\n"
                               f"{self._console_tail()}")
            if time.monotonic() - last > 10:
                last = time.monotonic()
                progress(f"  waiting for the guest's sshd ({last - t0:.0f} s)")
            time.sleep(0.5)
        progress(f"guest sshd answers on {self.vm_ip}:22 ({time.monotonic() - t0:.1f} s)")

    # --- down -------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop the VM and remove the namespace, tap and state (overlay, keys, logs).  qemu
        runs inside the host namespace, so the netns teardown kills it; the pid file is a
        second way, for a qemu whose namespace is already gone."""
        pid = self._qemu_pid()
        if pid:
            kill_pids([pid], 9, wait=5)
        super().down()

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        have = self._namespaces()
        meta = self.read_meta()
        pid = self._qemu_pid()
        st = {"backend": self.name, "prefix": self.prefix, "state_dir": str(self.state_dir),
              "namespaces": {self.host_ns: self.host_ns in have}, "interface": None,
              "qemu_pid": pid, "accel": meta.get("accel"), "image": meta.get("image"),
              "ssh": False, "provisioned": meta.get("provisioned_hash") is not None}
        if self.host_ns in have:
            res = run(["ip", "-n", self.host_ns, "-br", "addr", "show", self.capture_interface],
                      check=False)
            st["interface"] = res.stdout.decode().strip() or None
            st["ssh"] = pid is not None and self._ssh_banner()
        st["up"] = st["namespaces"][self.host_ns] and st["ssh"]
        return st
