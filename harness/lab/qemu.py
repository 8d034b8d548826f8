"""The qemu backend: the lab VM is a real Debian 12 guest with its own kernel.

    <prefix>-host  vboxnet0 (tap) 192.168.56.1/24  ──virtio-net──  eth0 192.168.56.100/24  guest
                   (captures, nc, qemu itself)                      (sshd, iptables, responder)

The host side is a namespace ``<prefix>-host`` (:class:`harness.lab.net.Namespace`, the same
name, ProxyCommand and teardown as the netns backend's, shared through :class:`Backend`, not by
subclassing it), with a tap instead of a veth: qemu runs *inside* it and opens the tap there,
so the guest can reach 192.168.56.1 and nothing else, and the root namespace is never touched.
The guest boots the cached image (:mod:`harness.lab.image`) directly (``-kernel/-initrd``,
``root=/dev/vda``) through a per-lab qcow2 overlay, so the cached image stays clean.  The lab's
SSH host key, root's authorized key and the static network reach the guest through qemu's
fw_cfg, read by a unit in the image before sshd starts: known_hosts is strict from the first
connection and the image is never rebuilt per lab.

Acceleration: KVM only when a short trial boot under KVM reaches the guest's userspace
(:func:`harness.lab.vm.kvm_usable`), else TCG with 2 vCPUs.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.lab import image, net
from harness.lab.base import ANSIBLE_DIRS, NETMASK_BITS, Backend, SshEndpoint
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab.net import Namespace
from harness.lab.vm import QEMU, kvm_usable
from harness.util import LabError, progress, run

TOOLS = (QEMU, "qemu-img", "ip", "ethtool", "nc", "ssh-keygen")
GUEST_MAC = "52:54:00:56:00:64"
GUEST_MEMORY_MB = 1024
TCG_CPUS = 2
BOOT_TIMEOUT = 240            # seconds to SSH; ~20 s measured under TCG with 2 vCPUs


def _guest_network(vm_ip: str, bits: int) -> str:
    """systemd-networkd config for the guest's lab NIC (no gateway: nowhere else to go)."""
    return (f"[Match]\nMACAddress={GUEST_MAC}\n\n[Network]\nAddress={vm_ip}/{bits}\n"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n")


@dataclass
class QemuBackend(Backend):
    name: str = "qemu"

    vm_interface = "eth0"

    def __post_init__(self):
        super().__post_init__()
        self.host_namespace = Namespace(f"{self.prefix}-host")

    def ssh_endpoint(self) -> SshEndpoint:
        return self._endpoint()

    def inventory_vars(self) -> dict:
        # The image has every package baked in, and the guest has no route to a mirror.
        return {"tcplab_vm_manage_packages": False}

    # --- queries ----------------------------------------------------------------------------
    def _qemu_pid(self) -> int | None:
        return self.state.live_pid("qemu.pid")

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
        :func:`harness.lab.provision.bring_up`, as for every backend."""
        self._begin_up(*ANSIBLE_DIRS, tools=TOOLS)
        img = image.ensure_image()
        self.write_meta(image=str(img))
        progress(f"namespace {self.host_ns} with tap {self.capture_interface}")
        self.host_namespace.make()
        if not net.link_exists(self.host_ns, self.capture_interface):
            net.tap(self.host_ns, self.capture_interface)
        net.addr_replace(self.host_ns, self.capture_interface, f"{self.host_ip}/{NETMASK_BITS}")
        net.link_up(self.host_ns, self.capture_interface)

        sd = self.state_dir
        client_pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        host_pub = ensure_keypair(sd / "ssh_host_ed25519_key", f"tcplab-{self.prefix}-host")
        self.state.write("authorized_keys", client_pub + "\n")
        write_known_hosts(sd / "known_hosts", self.vm_ip, host_pub)
        self.state.write("guest.network", _guest_network(self.vm_ip, NETMASK_BITS))

        if self._qemu_pid() is None:
            self._start_qemu(img)
        # The guest's NIC does no checksum offload (csum=off below); this makes the host's own
        # packets leave the tap with final checksums too, so captures show no "incorrect" ones.
        net.tx_offload_off(self.host_ns, self.capture_interface)
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
        while not self.ssh_answers():
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
        runs inside the host namespace and has the state directory on its command line, so
        the shared teardown kills it, also when its namespace is already gone."""
        self._teardown()

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self._status_base()
        meta = self.read_meta()
        pid = self._qemu_pid()
        st.update({"qemu_pid": pid, "accel": meta.get("accel"), "image": meta.get("image")})
        if st["namespaces"][self.host_ns]:
            st["interface"] = net.addr_brief(self.host_ns, self.capture_interface)
            st["ssh"] = pid is not None and self.ssh_answers()
        st["up"] = st["namespaces"][self.host_ns] and st["ssh"]
        return st
