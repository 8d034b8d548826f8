"""The qemu backend: the lab VM is a real Debian 12 guest with its own kernel.

    <prefix>-host  vboxnet0 (tap) 192.168.56.1/24  ──virtio-net──  eth0 192.168.56.100/24  guest
                   (captures, nc, qemu itself)                      (sshd, iptables, responder)

The host side is a namespace ``<prefix>-host`` (:class:`harness.lab.net.Namespace`, the same
name, ProxyCommand and teardown as the netns backend's, shared through :class:`Backend`, not by
subclassing it), with a tap instead of a veth: qemu runs *inside* it and opens the tap there,
so the guest can reach 192.168.56.1 and nothing else, and the root namespace is never touched.

``host_side="here"`` (``TCPLAB_QEMU_HOST_SIDE=here``) is VirtualBox's shape instead: no lab
namespace, the host side is the network namespace tcplab runs in (``host_exec_prefix()`` is
``[]``, no ProxyCommand); qemu makes its tap ``<prefix>-tap`` there, and the capture interface
is found by route and checked like VirtualBox's (:mod:`harness.lab.hostside`).  The tests run
it inside a namespace of their own, which then plays the laptop.

The guest: by default a lab *resumes* the snapshot of a provisioned guest
(:mod:`harness.lab.snapshot`: made once per image, responder, playbook and qemu version by
the first lab that needs it, by booting and provisioning as below), then gets the lab's own
SSH keys, clock and randomness from the host through the resume agent before sshd starts.
``snapshot=False`` (``TCPLAB_QEMU_SNAPSHOT=off``) boots the cached image
(:mod:`harness.lab.image`) directly instead (``-kernel/-initrd``, ``root=/dev/vda``) and leaves
provisioning to the playbook; the lab's SSH host key, root's authorized key and the static
network then reach the guest through qemu's fw_cfg, read by a unit in the image before sshd
starts.  Either way each lab writes to a qcow2 overlay of its own (the cache stays clean) and
known_hosts is strict from the first connection.

Acceleration: KVM only when a short trial boot under KVM reaches the guest's userspace
(:func:`harness.lab.vm.kvm_usable`), else TCG with 2 vCPUs.

The functions at module level (:func:`accel_args`, :func:`guest_argv`, :func:`start_guest`,
:func:`wait_for_ssh`) take no backend, so another module can run a guest the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.lab import hostside, image, net, snapshot
from harness.lab.base import ANSIBLE_DIRS, NETMASK_BITS, Backend, SshEndpoint
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab.net import Namespace
from harness.lab.vm import QEMU, kvm_usable
from harness.util import LabError, kill_pids, pids_mentioning, progress, run, wait_until

TOOLS = (QEMU, "qemu-img", "ip", "ethtool", "nc", "ssh-keygen")
GUEST_MAC = "52:54:00:56:00:64"
GUEST_MEMORY_MB = 1024
TCG_CPUS = 2
BOOT_TIMEOUT = 240            # seconds to SSH; ~20 s measured under TCG with 2 vCPUs
HOST_SIDES = ("namespace", "here")
HOST_SIDE_ENV = "TCPLAB_QEMU_HOST_SIDE"
SNAPSHOT_ENV = "TCPLAB_QEMU_SNAPSHOT"
#: What reaches the guest through fw_cfg (opt/tcplab/NAME), read by the image's unit at boot.
FW_CFG = ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "authorized_keys", "network")


def _guest_network(vm_ip: str, bits: int) -> str:
    """systemd-networkd config for the guest's lab NIC (no gateway: nowhere else to go)."""
    return (f"[Match]\nMACAddress={GUEST_MAC}\n\n[Network]\nAddress={vm_ip}/{bits}\n"
            f"LinkLocalAddressing=no\nIPv6AcceptRA=no\n")


def accel_args(img: Path) -> tuple[list[str], bool, str]:
    """qemu's accelerator arguments, whether that is KVM, and why."""
    kvm, why = kvm_usable(img)
    if kvm:
        return ["-accel", "kvm", "-cpu", "host", "-smp", "2"], True, why
    return ["-accel", "tcg", "-smp", str(TCG_CPUS)], False, why


def guest_argv(*, name: str, img: Path, accel: list[str], disk: Path, run_dir: Path, tap: str,
               files: Path, incoming: str | None = None) -> list[str]:
    """qemu's command line for the lab guest.  ``run_dir`` holds its console log, pid file,
    QMP socket and the resume agent's socket; ``files`` the fw_cfg files (:data:`FW_CFG`).
    Everything but those paths, ``disk`` and ``incoming`` is what a snapshot's key covers (a
    resumed guest's machine must be the saved one's)."""
    fw = [a for n in FW_CFG for a in ("-fw_cfg", f"name=opt/tcplab/{n},file={files / n}")]
    return [QEMU, "-name", name, "-machine", "q35", *accel,
            "-m", str(GUEST_MEMORY_MB), "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{run_dir}/console.log",
            "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img"),
            # tsc=reliable: under TCG the vCPUs' TSCs look unsynchronised, and the fallback clock
            # (HPET, an emulated MMIO read per clock read) makes the guest several times slower.
            "-append", "root=/dev/vda rw net.ifnames=0 console=ttyS0 panic=-1 quiet "
                       "tsc=reliable",
            "-drive", f"file={disk},if=virtio,format=qcow2,discard=unmap",
            "-netdev", f"tap,id=lab,ifname={tap},script=no,downscript=no",
            # No checksum/segmentation offload between guest and tap: every packet the guest
            # sends is complete on the wire, as the capture must see it.
            "-device", f"virtio-net-pci,netdev=lab,mac={GUEST_MAC},csum=off,guest_csum=off,"
                       f"gso=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,"
                       f"host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off",
            "-device", "virtio-rng-pci",
            # A resumed guest's kernel sees a new generation ID and reseeds its RNG.
            "-device", "vmgenid",
            "-device", "virtio-serial-pci,id=vser",
            "-chardev", f"socket,id=agent,path={run_dir}/agent.sock,server=on,wait=off",
            "-device", f"virtserialport,bus=vser.0,chardev=agent,name={snapshot.AGENT_PORT}",
            "-qmp", f"unix:{run_dir}/qmp.sock,server=on,wait=off",
            *fw, *(["-incoming", incoming] if incoming else []),
            "-pidfile", str(run_dir / "qemu.pid"), "-daemonize"]


def start_guest(exec_prefix: list[str], argv: list[str]) -> None:
    """Start qemu (it daemonizes); LabError with its last stderr line if it does not."""
    # stdin from /dev/null: qemu makes its stdio non-blocking, and that flag lives on the
    # file description it would share with this process (Ansible then refuses to run).
    res = subprocess.run(exec_prefix + argv, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=60)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise LabError(f"qemu did not start: {err.splitlines()[-1] if err else res.returncode}")


def console_tail(console: Path, lines: int = 15) -> str:
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_for_ssh(answers, alive, console: Path, where: str, timeout: float = BOOT_TIMEOUT):
    """Wait until ``answers()`` (sshd's banner); LabError with the console's tail when qemu
    (``alive()``) exits or ``timeout`` passes."""
    t0 = last = time.monotonic()
    while not answers():
        if not alive():
            raise LabError(f"qemu exited while the guest started; console:\n"
                           f"{console_tail(console)}")
        if time.monotonic() - t0 > timeout:
            raise LabError(f"the guest's sshd did not answer on {where} within {timeout} s; "
                           f"console ({console}):\n{console_tail(console)}")
        if time.monotonic() - last > 10:
            last = time.monotonic()
            progress(f"  waiting for the guest's sshd ({last - t0:.0f} s)")
        time.sleep(0.2)
    progress(f"guest sshd answers on {where} ({time.monotonic() - t0:.1f} s)")


def _setting(value, recorded, env: str, default):
    """A lab's setting: given, else as its record says, else from ``env``, else ``default``."""
    if value is not None:
        return value
    if recorded is not None:
        return recorded
    return os.environ.get(env) or default


@dataclass
class QemuBackend(Backend):
    name: str = "qemu"
    #: "namespace" (the lab's <prefix>-host) or "here" (this network namespace: VirtualBox's shape)
    host_side: str | None = None
    #: resume the provisioned snapshot (True) or boot the image and leave it to the playbook
    snapshot: bool | None = None
    #: up() made an already provisioned guest (the snapshot): no forced playbook run after it
    provisioned_by_up: bool = field(default=False, init=False)

    vm_interface = "eth0"

    def __post_init__(self):
        super().__post_init__()
        meta = self.read_meta()
        self.host_side = _setting(self.host_side, meta.get("host_side"), HOST_SIDE_ENV,
                                  "namespace")
        if self.host_side not in HOST_SIDES:
            raise LabError(f"{HOST_SIDE_ENV}={self.host_side!r}: choose namespace (the lab's "
                           f"own <prefix>-host) or here (this network namespace)")
        snap = _setting(self.snapshot, meta.get("snapshot_mode"), SNAPSHOT_ENV, "on")
        if snap not in (True, False, "on", "off"):
            raise LabError(f"{SNAPSHOT_ENV}={snap!r}: choose on (resume the provisioned "
                           f"snapshot) or off (boot the image, provision with Ansible)")
        self.snapshot = snap in (True, "on")
        self._keys_dir: Path | None = None         # the template's keys during a snapshot build
        if self.host_side == "namespace":
            self.host_namespace = Namespace(f"{self.prefix}-host")
        else:
            self.capture_interface = meta.get("capture_interface") or self.tap

    @property
    def tap(self) -> str:
        return "vboxnet0" if self.host_side == "namespace" else f"{self.prefix}-tap"

    def ssh_endpoint(self) -> SshEndpoint:
        ep = self._endpoint()
        if self._keys_dir is not None:
            ep.key_file, ep.known_hosts = (self._keys_dir / "id_ed25519",
                                           self._keys_dir / "known_hosts")
        return ep

    def inventory_vars(self) -> dict:
        # The image has every package baked in, and the guest has no route to a mirror.
        return {"tcplab_vm_manage_packages": False}

    # --- queries ----------------------------------------------------------------------------
    def _qemu_pid(self) -> int | None:
        return self.state.live_pid("qemu.pid")

    def _console_tail(self, lines: int = 15) -> str:
        return console_tail(self.state_dir / "console.log", lines)

    # --- up ---------------------------------------------------------------------------------
    def up(self) -> None:
        """Image (cached), host side, SSH material, then the guest: resumed from the snapshot
        (made first when missing) or booted; wait for SSH.  Idempotent: every step checks
        before it acts; a running guest is left alone.  Provisioning (and removing a fresh lab
        whose making failed) is done by :func:`harness.lab.provision.bring_up`."""
        self._begin_up(*ANSIBLE_DIRS, tools=TOOLS, host_side=self.host_side,
                       snapshot_mode="on" if self.snapshot else "off",
                       host_netns=os.readlink("/proc/self/ns/net"))
        img = image.ensure_image()
        self.write_meta(image=str(img))
        self._host_side_up()
        self._lab_keys(self.state_dir)
        if self._qemu_pid() is None:
            accel, kvm, why = accel_args(img)
            progress(f"accelerator: {'KVM' if kvm else 'TCG, emulated CPUs'} ({why})")
            self.write_meta(accel="kvm" if kvm else "tcg", accel_reason=why)
            if self.snapshot:
                self._resume(img, accel)
            else:
                self._boot(img, accel, self._overlay(img / "rootfs.raw", "raw"),
                           self.state_dir)
        self._tap_up()
        self._wait_for_ssh()
        if self.host_side == "here":
            dev = hostside.capture_interface(self.vm_ip, self.host_ip)
            if dev != self.tap:
                raise LabError(f"the route to {self.vm_ip} here leaves by {dev}, not by the "
                               f"lab's tap {self.tap}: another host-only network uses "
                               f"192.168.56.0/24 in this network namespace; remove it (or "
                               f"use the namespace host side)")
            self.capture_interface = dev
            self.write_meta(capture_interface=dev)

    def _host_side_up(self) -> None:
        if self.host_namespace is not None:
            progress(f"namespace {self.host_ns} with tap {self.capture_interface}")
            self.host_namespace.make()
            if not net.link_exists(self.host_ns, self.tap):
                net.tap(self.host_ns, self.tap)
        elif self._qemu_pid() is None and net.link_exists(None, self.tap):
            raise LabError(f"an interface {self.tap} exists here but no qemu of lab "
                           f"'{self.prefix}' runs: it is not this lab's; remove it or choose "
                           f"another --prefix")

    def _tap_up(self) -> None:
        """The host's address on the tap, the tap up, TX checksum offload off.  The guest's
        NIC does no checksum offload (csum=off); this makes the host's own packets leave the
        tap with final checksums too, so captures show no "incorrect" ones."""
        net.addr_replace(self.host_ns, self.tap, f"{self.host_ip}/{NETMASK_BITS}")
        net.link_up(self.host_ns, self.tap)
        net.tx_offload_off(self.host_ns, self.tap)

    def _lab_keys(self, d: Path, who: str | None = None) -> None:
        """SSH material for a guest in ``d``: a client key, a host key, authorized_keys,
        known_hosts, and the guest's network file (the fw_cfg files)."""
        who = who or f"tcplab-{self.prefix}"
        client_pub = ensure_keypair(d / "id_ed25519", who)
        host_pub = ensure_keypair(d / "ssh_host_ed25519_key", f"{who}-host")
        self.state.write(str((d / "authorized_keys").relative_to(self.state_dir)),
                         client_pub + "\n")
        write_known_hosts(d / "known_hosts", self.vm_ip, host_pub)
        self.state.write(str((d / "network").relative_to(self.state_dir)),
                         _guest_network(self.vm_ip, NETMASK_BITS))

    def _overlay(self, backing: Path, fmt: str) -> Path:
        """A new qcow2 overlay of ``backing`` for this lab (the old one, if any, goes: a guest
        that is not running is made anew)."""
        overlay = self.state_dir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing),
             str(overlay)], what="qemu-img create (overlay)")
        return overlay

    def _argv(self, img: Path, accel: list[str], disk: Path, files: Path,
              incoming: str | None = None) -> list[str]:
        return guest_argv(name=f"tcplab-{self.prefix}", img=img, accel=accel, disk=disk,
                          run_dir=self.state_dir, tap=self.tap, files=files, incoming=incoming)

    def _boot(self, img: Path, accel: list[str], disk: Path, files: Path) -> None:
        progress(f"booting the guest (qemu {'in ' + self.host_ns if self.host_ns else 'here'};"
                 f" console: {self.state_dir}/console.log)")
        start_guest(self.host_exec_prefix(), self._argv(img, accel, disk, files))
        self.write_meta(booted_at=time.time())

    def _wait_for_ssh(self) -> None:
        wait_for_ssh(self.ssh_answers, lambda: self._qemu_pid() is not None,
                     self.state_dir / "console.log", f"{self.vm_ip}:22")

    # --- the snapshot -----------------------------------------------------------------------
    def _resume(self, img: Path, accel: list[str]) -> None:
        """Resume the provisioned snapshot (made first when missing), then rotate the lab's
        secrets in.  A snapshot that cannot be resumed is discarded and made again, once."""
        # The machine as qemu is told it, without what differs between labs (names, paths).
        machine = guest_argv(name="NAME", img=img, accel=accel, disk=Path("DISK"),
                             run_dir=Path("RUN"), tap="TAP", files=Path("FILES"))[1:]
        parts = snapshot.key_parts(img, machine, QEMU)
        snap = snapshot.snapshot_for(parts)
        for attempt in (1, 2):
            with snapshot.locked(snap):
                if not snap.ready():
                    self._build_snapshot(img, accel, snap, parts)
            try:
                self._resume_from(img, accel, snap)
                return
            except LabError as e:
                if attempt == 2:
                    raise
                progress(f"snapshot {snap.key} could not be resumed ({e}); making it again")
                self._stop_qemu()
                with snapshot.locked(snap):
                    snap.discard()

    def _resume_from(self, img: Path, accel: list[str], snap: snapshot.Snapshot) -> None:
        t0 = time.monotonic()
        progress(f"resuming the provisioned guest (snapshot {snap.key})")
        disk = self._overlay(snap.disk, "qcow2")
        start_guest(self.host_exec_prefix(),
                    self._argv(img, accel, disk, self.state_dir, snap.incoming()))
        self._tap_up()
        sd = self.state_dir
        snapshot.resume(sd / "qmp.sock")
        loaded_s = time.monotonic() - t0        # qemu started, the saved guest read, running
        reply = snapshot.rotate(sd / "agent.sock", sd / "ssh_host_ed25519_key",
                                sd / "authorized_keys")
        self.provisioned_by_up = True
        made_from = json.loads(snap.meta.read_text())
        resume_s = time.monotonic() - t0
        self.write_meta(provisioned_hash=made_from["responder"], snapshot=snap.key,
                        resumed_at=time.time(), resume_s=round(resume_s, 2),
                        loaded_s=round(loaded_s, 2),
                        clock_was_behind_s=reply.get("clock_was_behind_s"))
        progress(f"guest resumed with the lab's own keys in {resume_s:.1f} s (qemu and the "
                 f"saved guest {loaded_s:.1f} s, keys and sshd {resume_s - loaded_s:.1f} s); "
                 f"its clock was {reply.get('clock_was_behind_s')} s behind, now set")

    def _build_snapshot(self, img: Path, accel: list[str], snap: snapshot.Snapshot,
                        parts: dict) -> None:
        """Boot a template guest with keys of its own, provision it with the playbook, start
        the resume agent in it, save it (harness.lab.snapshot)."""
        from harness.lab.provision import provision
        from harness.run.ssh import LabSSH
        t0 = time.monotonic()
        build = snap.building()
        shutil.rmtree(build.dir, ignore_errors=True)
        build.dir.parent.mkdir(parents=True, exist_ok=True)
        build.dir.mkdir(mode=0o700)            # the saved guest's RAM and disk: root's alone
        progress(f"no snapshot of a provisioned guest yet ({snap.dir}): booting and "
                 f"provisioning one (once per image, responder, playbook and qemu version)")
        tdir = self.state_dir / "template"
        self.state.prepare("template")
        self._lab_keys(tdir, "tcplab-snapshot-template")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
             str(img / "rootfs.raw"), str(build.disk)], what="qemu-img create (snapshot)")
        self._boot(img, accel, build.disk, tdir)
        self._tap_up()
        self._keys_dir = tdir
        try:
            self._wait_for_ssh()
            boot_s = time.monotonic() - t0
            provision(self)
            with LabSSH(self.ssh_endpoint()) as ssh:
                snapshot.install_agent(ssh)
        finally:
            self._keys_dir = None
            # The host's SSH masters to the template end here (a FIN, not a resumable session).
            kill_pids(pids_mentioning(str(self.state_dir / "ansible" / "cp")), signal.SIGTERM,
                      wait=5)
        snapshot.agent_call(self.state_dir / "agent.sock", {"op": "prepare"})
        save_s = snapshot.save(self.state_dir / "qmp.sock", build.state)
        if not wait_until(lambda: self._qemu_pid() is None, timeout=30, interval=0.1):
            raise LabError("qemu did not quit after saving the snapshot")
        snapshot.write_meta(build, parts, boot_s=round(boot_s, 1), save_s=round(save_s, 1),
                            build_s=round(time.monotonic() - t0, 1),
                            size_mb=round(build.state.stat().st_size / 2**20))
        shutil.rmtree(tdir, ignore_errors=True)
        snap.discard()
        build.dir.rename(snap.dir)
        progress(f"snapshot {snap.key} made in {time.monotonic() - t0:.0f} s "
                 f"({build.state.name}: {snap.state.stat().st_size / 2**20:.0f} MB)")
        gone = snapshot.prune()
        if gone:
            progress(f"removed older snapshots (keeping the newest {snapshot.KEEP}): "
                     f"{', '.join(gone)}")

    def _stop_qemu(self) -> None:
        pid = self._qemu_pid()
        if pid is not None:
            kill_pids([pid], signal.SIGKILL, wait=5)

    # --- down -------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop the VM and remove the namespace, tap and state (overlay, keys, logs).  qemu
        runs inside the host namespace and has the state directory on its command line, so
        the shared teardown kills it, also when its namespace is already gone.  With the host
        side here, qemu's tap goes with qemu, and the teardown removes the lab's tagged rules
        here."""
        if self.host_side == "here":
            self._other_netns_rules()
        self._teardown()

    def _other_netns_rules(self) -> None:
        """``down`` run from another network namespace than the lab's ``up``: remove the lab's
        tagged host rules in the one ``up`` ran in, found among the named namespaces."""
        from harness.lab.firewall import remove_host_rules
        recorded = self.read_meta().get("host_netns")
        if not recorded or recorded == os.readlink("/proc/self/ns/net"):
            return
        for ns in sorted(net.namespaces()):
            try:
                same = os.stat(f"/run/netns/{ns}").st_ino == int(recorded.strip("net:[]"))
            except (OSError, ValueError):
                continue
            if same:
                for rule in remove_host_rules(self.prefix, net.exec_prefix(ns)):
                    progress(f"removed the host rule `{rule}` in namespace {ns}")
                return
        progress(f"the lab's host side was network namespace {recorded}, not this one, and "
                 f"no named namespace is it: rules tagged for '{self.prefix}' there, if any, "
                 f"stay")

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self._status_base()
        meta = self.read_meta()
        pid = self._qemu_pid()
        st.update({"qemu_pid": pid, "accel": meta.get("accel"), "image": meta.get("image"),
                   "host_side": self.host_side, "snapshot": meta.get("snapshot")})
        side = st["namespaces"][self.host_ns] if self.host_namespace else pid is not None
        if side:
            st["interface"] = net.addr_brief(self.host_ns, self.tap)
            st["ssh"] = pid is not None and self.ssh_answers()
        st["up"] = bool(side and st["ssh"])
        return st
