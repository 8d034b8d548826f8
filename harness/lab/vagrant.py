"""The vagrant backend: the lab VM made by the top-level ``Vagrantfile``.

Two providers:

* ``virtualbox`` (users' laptops, VirtualBox CI runners): Vagrant and VirtualBox as installed;
  the host side is this machine itself (VirtualBox's host-only interface, found by the route to
  192.168.56.100, since VirtualBox 7 on macOS has no ``vboxnet0``).
* ``libvirt`` (how the backend is tested on a machine without VirtualBox): libvirtd is started
  by the lab *inside* its host namespace ``<prefix>-host`` and a private mount namespace, so its
  bridges (the host-only network's 192.168.56.1 bridge, named ``vboxnet0``, and Vagrant's
  management network) and its state (``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``
  ... bound from the lab's state directory) stay in the lab.  The box is built locally from the
  qemu backend's image (:func:`build_box`, ``invoke box``); the domain type is TCG (``qemu``)
  where KVM is unusable.

``up`` runs ``vagrant up`` (whose Ansible provisioner runs ``provision/site.yml``), then gives
the harness its own strict SSH access as root: the lab's key is authorized for root and the
VM's host key is read, both over Vagrant's SSH.  ``down`` runs ``vagrant destroy`` and removes
everything else, also when Vagrant or libvirtd died.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.lab import hostside, image, net
from harness.lab.base import ANSIBLE_DIRS, Backend, SshEndpoint, responder_tree_hash
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab.net import Namespace
from harness.lab.provision import ansible_paths
from harness.lab.state import LabState, state_root
from harness.lab.vm import QEMU, kvm_usable
from harness.util import (PROJECT_ROOT, LabError, progress, require_root, require_tools, run,
                          stream, wait_until)

PROVIDERS = ("virtualbox", "libvirt")
LOCAL_BOX = "tcplab/debian12"
PROVIDER_ENV = "TCPLAB_VAGRANT_PROVIDER"
HOSTONLY_NET = "tcplab-hostonly"
LIBVIRT_DIRS = {"run": "/run/libvirt", "lib": "/var/lib/libvirt", "etc": "/etc/libvirt",
                "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}
QEMU_CONF = """
# tcplab: libvirtd inside a lab's namespaces, as root, without cgroups, SELinux/AppArmor or
# virtlogd (none of them is there in a container or a CI runner).
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
namespaces = [ ]
cgroup_controllers = [ ]
"""
BOX_VAGRANTFILE = """\
# The tcplab box: an unpartitioned ext4 disk, booted with the Debian kernel shipped beside it.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    dir = File.dirname(File.expand_path(__FILE__))
    lv.kernel = File.join(dir, "vmlinuz")
    lv.initrd = File.join(dir, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw net.ifnames=0 console=ttyS0 panic=-1"
    lv.disk_bus = "virtio"
  end
end
"""


def _default_provider() -> str:
    if os.environ.get(PROVIDER_ENV):
        return os.environ[PROVIDER_ENV]
    if shutil.which("VBoxManage"):
        return "virtualbox"
    return "libvirt"


def vagrant_home() -> Path:
    """Where the libvirt path keeps Vagrant's boxes (the local box): beside the images."""
    return image.cache_root().parent / "vagrant.d"


def vagrant_insecure_key() -> Path:
    """Vagrant's well-known public key: a box authorizes it; Vagrant swaps it on first up."""
    out = run(["gem", "contents", "vagrant"], check=False).stdout.decode() \
        if shutil.which("gem") else ""
    cands = [Path(l) for l in out.splitlines() if l.endswith("keys/vagrant.pub")]
    cands += sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub"))
    cands += sorted(Path("/opt/vagrant/embedded/gems").glob("**/vagrant-*/keys/vagrant.pub"))
    for c in cands:
        if c.is_file():
            return c
    raise LabError("Vagrant's keys/vagrant.pub not found: install Vagrant (packages/apt-vm.txt)")


def box_file() -> Path:
    return image.cache_root().parent / "boxes" / image.recipe_hash() / "tcplab-debian12.box"


def build_box() -> Path:
    """A libvirt box made from the qemu backend's cached image (no download); cached too."""
    out = box_file()
    if out.exists():
        progress(f"box: cached in {out}")
        return out
    require_tools("debugfs", "qemu-img", "tar")
    img = image.ensure_image()
    work = out.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    progress(f"box: building {out} from {img}")
    raw = work / "box.raw"
    run(["cp", "--sparse=always", str(img / "rootfs.raw"), str(raw)], what="cp rootfs.raw",
        timeout=300)
    # The vagrant user (made in the image) gets Vagrant's insecure key, written straight into
    # the ext4 image with debugfs: no loop device, no mount.
    uid = gid = 1000
    cmds = work / "debugfs.cmd"
    cmds.write_text("\n".join([
        "mkdir /home/vagrant/.ssh",
        f"write {vagrant_insecure_key()} /home/vagrant/.ssh/authorized_keys",
        f"set_inode_field /home/vagrant/.ssh uid {uid}",
        f"set_inode_field /home/vagrant/.ssh gid {gid}",
        "set_inode_field /home/vagrant/.ssh mode 040700",
        f"set_inode_field /home/vagrant/.ssh/authorized_keys uid {uid}",
        f"set_inode_field /home/vagrant/.ssh/authorized_keys gid {gid}",
        "set_inode_field /home/vagrant/.ssh/authorized_keys mode 0100600",
    ]) + "\n")
    res = run(["debugfs", "-w", "-f", str(cmds), str(raw)], what="debugfs")
    if b"rror" in res.stderr:
        raise LabError(f"debugfs: {res.stderr.decode(errors='replace').strip()[-300:]}")
    # Compressed: Vagrant uploads the box into the libvirt pool as a stream (~10 MB/s here).
    run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(work / "box.img")],
        what="qemu-img convert", timeout=600)
    raw.unlink()
    size_gb = math.ceil((img / "rootfs.raw").stat().st_size / 2**30)
    (work / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": size_gb}) + "\n")
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    shutil.copy2(img / "vmlinuz", work / "vmlinuz")
    shutil.copy2(img / "initrd.img", work / "initrd.img")
    tmp = out.with_suffix(".tmp")
    run(["tar", "-C", str(work), "-cf", str(tmp), "metadata.json", "Vagrantfile", "box.img",
         "vmlinuz", "initrd.img"], what="tar (box)", timeout=300)
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    progress(f"box: built in {time.monotonic() - t0:.0f} s")
    return out


@dataclass
class VagrantBackend(Backend):
    """With libvirt the host side is the lab's namespace ``<prefix>-host``; with VirtualBox
    there is no namespace at all (``host_namespace`` is None): the host side is this machine."""

    name: str = "vagrant"
    provider: str | None = None

    def __post_init__(self):
        super().__post_init__()
        meta = self.read_meta()
        self.provider = self.provider or meta.get("provider") or _default_provider()
        if self.provider not in PROVIDERS:
            raise LabError(f"unknown Vagrant provider {self.provider!r}: choose "
                           f"{' or '.join(PROVIDERS)}")
        self.capture_interface = meta.get("capture_interface", self.capture_interface)
        if self.provider == "libvirt":
            self.host_namespace = Namespace(f"{self.prefix}-host")

    @property
    def in_namespace(self) -> bool:
        return self.host_namespace is not None

    # --- how commands run -------------------------------------------------------------------
    def _libvirt_wrap(self, argv: list[str]) -> list[str]:
        """Run ``argv`` in the lab's host namespace with libvirt's directories bound from the
        lab's state (a fresh private mount namespace per command, all seeing the same files)."""
        binds = " && ".join(f"mount --bind {shlex.quote(str(self.libvirt_dir / k))} {v}"
                            for k, v in LIBVIRT_DIRS.items())
        script = f"mount --make-rprivate / && {binds} && exec \"$@\""
        return self.host_exec_prefix() + ["unshare", "--mount", "sh", "-c", script,
                                          "tcplab-libvirt", *argv]

    def _wrap(self, argv: list[str]) -> list[str]:
        return self._libvirt_wrap(argv) if self.in_namespace else argv

    @property
    def libvirt_dir(self) -> Path:
        return self.state_dir / "libvirt"

    def _vagrant_env(self) -> dict:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env.update({"VAGRANT_CWD": str(PROJECT_ROOT),
                    "VAGRANT_DOTFILE_PATH": str(self.state_dir / "vagrant"),
                    "VAGRANT_DEFAULT_PROVIDER": self.provider,
                    "VAGRANT_CHECKPOINT_DISABLE": "1",
                    "VAGRANT_NO_COLOR": "1",
                    "PATH": venv_bin + os.pathsep + env.get("PATH", "")})
        env.update(ansible_paths(self.state_dir))      # Vagrant's Ansible provisioner
        if self.in_namespace:
            env["VAGRANT_HOME"] = str(vagrant_home())
            env["TCPLAB_BOX"] = os.environ.get("TCPLAB_BOX", LOCAL_BOX)
            env["TCPLAB_LIBVIRT_DRIVER"] = self.read_meta().get("libvirt_driver", "qemu")
            env["LIBVIRT_DEFAULT_URI"] = "qemu:///system"
        return env

    def vagrant(self, *args: str, timeout: float = 900, check: bool = True,
                logged: bool = False) -> subprocess.CompletedProcess:
        """``vagrant ARGS`` for this lab; ``logged`` shows its lines as progress and keeps
        them in ``vagrant-ARG.log`` in the state directory."""
        cmd = self._wrap(["vagrant", *args])
        if logged:
            def show(line: str) -> None:
                if line.strip() and not line.startswith(" " * 8) and "Progress:" not in line:
                    progress("  " + line[:150])        # not the per-percent upload lines
            with self.state.open_log(f"vagrant-{args[0]}.log") as f:
                out = stream(cmd, log=f, what=f"vagrant {args[0]}", show=show, timeout=timeout,
                             env=self._vagrant_env(), cwd=PROJECT_ROOT)
            return subprocess.CompletedProcess(cmd, 0, out.stdout.encode(), b"")
        try:
            res = subprocess.run(cmd, env=self._vagrant_env(), capture_output=True,
                                 stdin=subprocess.DEVNULL, timeout=timeout, cwd=PROJECT_ROOT)
        except subprocess.TimeoutExpired:
            raise LabError(f"vagrant {' '.join(args)} did not finish within {timeout:g} s")
        if check and res.returncode != 0:
            text = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
            raise LabError(f"vagrant {' '.join(args)} failed: "
                           f"{' | '.join(text[-4:]) if text else res.returncode}")
        return res

    def ssh_endpoint(self) -> SshEndpoint:
        return self._endpoint()

    def inventory_vars(self) -> dict:
        # Vagrant's provisioner already ran the playbook with the packages the box needs.
        return {"tcplab_vm_manage_packages": False}

    # --- queries ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.state_dir / "vagrant").exists() or super().exists()

    def _libvirtd_pid(self) -> int | None:
        return self.state.live_pid("libvirtd.pid")

    def _find_capture_interface(self) -> str:
        """The host-side interface that reaches the VM (vboxnet0 on Linux VirtualBox; another
        name with VirtualBox 7 host-only networks on macOS, or libvirt's bridge), checked to
        carry the host's address (:func:`harness.lab.hostside.capture_interface`)."""
        return hostside.capture_interface(self.vm_ip, self.host_ip, self.host_ns)

    # --- up ---------------------------------------------------------------------------------
    def up(self) -> None:
        self._begin_up(*ANSIBLE_DIRS, "vagrant", tools=("vagrant", "ssh-keygen", "nc"),
                       provider=self.provider)
        if self.in_namespace:
            self._libvirt_up()
        t0 = time.monotonic()
        progress(f"vagrant up --provider {self.provider} (boots and provisions the VM)")
        res = self.vagrant("up", "--provider", self.provider, logged=True, timeout=1800)
        self.write_meta(vagrant_up_seconds=round(time.monotonic() - t0, 1))
        if b"Running provisioner: ansible" in res.stdout:
            # Vagrant's provisioner just ran provision/site.yml on this responder tree: the
            # harness need not run it again (``invoke up`` still does, with force).
            self.write_meta(provisioned_hash=responder_tree_hash())
        self._harness_ssh()
        self.capture_interface = self._find_capture_interface()
        self.write_meta(capture_interface=self.capture_interface)
        # The host's own packets on the capture interface with final checksums (Linux).
        if platform.system() == "Linux":
            net.tx_offload_off(self.host_ns, self.capture_interface, check=False)

    def _libvirt_up(self) -> None:
        require_tools("libvirtd", "virsh", "unshare", QEMU, "ip")
        progress(f"namespace {self.host_ns} for libvirtd and the VM's networks")
        self.host_namespace.make()
        if self._libvirtd_pid() is None:
            self._start_libvirtd()
        img = image.ensure_image()
        kvm, why = kvm_usable(img)
        self.write_meta(libvirt_driver="kvm" if kvm else "qemu", accel_reason=why)
        progress(f"libvirt domain type: {'kvm' if kvm else 'qemu (TCG)'} ({why})")
        self._hostonly_network()
        self._local_box()

    def _start_libvirtd(self) -> None:
        lv = self.libvirt_dir
        self.state.prepare(*(f"libvirt/{k}" for k in LIBVIRT_DIRS))
        if not (lv / "etc" / "libvirtd.conf").exists():
            shutil.copytree("/etc/libvirt", lv / "etc", dirs_exist_ok=True)
            for f in (lv / "etc" / "qemu" / "networks").glob("**/default.xml"):
                f.unlink()              # libvirt's default NAT network: not in a lab
            with open(lv / "etc" / "qemu.conf", "a") as f:
                f.write(QEMU_CONF)
        made = [m for m in LIBVIRT_DIRS.values() if not os.path.isdir(m)]
        self.write_meta(made_mountpoints=sorted(set(made)
                                                | set(self.read_meta().get("made_mountpoints", []))))
        for mountpoint in made:
            os.makedirs(mountpoint)    # bind targets: empty directories, removed by down
        progress(f"libvirtd inside {self.host_ns} (state in {lv})")
        run(self._libvirt_wrap(["libvirtd", "--daemon", "--pid-file",
                                str(self.state_dir / "libvirtd.pid")]), what="libvirtd")
        ok = wait_until(lambda: run(self._libvirt_wrap(["virsh", "-q", "-c", "qemu:///system",
                                                        "version"]), check=False).returncode == 0,
                        timeout=30, interval=0.5)
        if not ok:
            raise LabError(f"libvirtd did not answer within 30 s; see {lv}/log/libvirtd.log")

    def _virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(self._libvirt_wrap(["virsh", "-q", "-c", "qemu:///system", *args]),
                   check=check, what=f"virsh {args[0]}")

    def _hostonly_network(self) -> None:
        """The private network, made before Vagrant so its bridge is named vboxnet0 (the
        design's host-side interface); Vagrant finds it by name and address."""
        if self._virsh("net-info", HOSTONLY_NET, check=False).returncode != 0:
            xml = self.state.write("libvirt/hostonly.xml",
                                   f"<network><name>{HOSTONLY_NET}</name>"
                                   f"<bridge name='{self.capture_interface}' stp='off'/>"
                                   f"<ip address='{self.host_ip}' netmask='255.255.255.0'/>"
                                   f"</network>\n")
            self._virsh("net-define", str(xml))
        info = self._virsh("net-info", HOSTONLY_NET).stdout.decode()
        if not re.search(r"^Active:\s+yes", info, re.M):
            self._virsh("net-start", HOSTONLY_NET)

    def _local_box(self) -> None:
        box = os.environ.get("TCPLAB_BOX", LOCAL_BOX)
        if box != LOCAL_BOX:
            return
        f = build_box()
        stamp = vagrant_home() / "tcplab-box.source"
        listed = self.vagrant("box", "list").stdout.decode()
        if LOCAL_BOX in listed and stamp.exists() and stamp.read_text() == str(f):
            return
        progress(f"vagrant box add {LOCAL_BOX} ({f})")
        self.vagrant("box", "add", "--force", "--name", LOCAL_BOX, str(f), timeout=600)
        stamp.write_text(str(f))

    def _harness_ssh(self) -> None:
        """Authorize the lab's key for root and record the VM's host key, over Vagrant's SSH."""
        sd = self.state_dir
        pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        script = (f"sudo install -d -m 700 /root/.ssh && "
                  f"echo {shlex.quote(pub)} | sudo tee /root/.ssh/authorized_keys >/dev/null && "
                  f"sudo chmod 600 /root/.ssh/authorized_keys && "
                  f"cat /etc/ssh/ssh_host_ed25519_key.pub")
        out = self.vagrant("ssh", "-c", script, timeout=120).stdout.decode()
        host = [l for l in out.splitlines() if l.startswith("ssh-ed25519 ")]
        if not host:
            raise LabError(f"could not read the VM's host key over `vagrant ssh`: {out[-200:]}")
        write_known_hosts(sd / "known_hosts", self.vm_ip, host[-1])
        if not wait_until(self.ssh_answers, timeout=30, interval=0.5):
            raise LabError(f"the VM's sshd does not answer on {self.vm_ip}:22 from the host side")

    # --- down -------------------------------------------------------------------------------
    def down(self) -> None:
        """``vagrant destroy``, then the shared teardown: (libvirt) the namespace with qemu,
        dnsmasq and libvirtd in it, every process naming the state directory, the state."""
        require_root("invoke down")
        if self.state.check() and (self.state_dir / "vagrant").exists() and \
                (not self.in_namespace or self._libvirtd_pid()):
            progress("vagrant destroy -f")
            try:
                self.vagrant("destroy", "-f", timeout=300, check=False)
            except LabError as e:
                progress(f"  {e}; removing the rest anyway")
        made = self.read_meta().get("made_mountpoints", [])
        self._teardown()
        others = [p for p in state_root().glob("*/libvirtd.pid")
                  if LabState(p.parent.name).live_pid(p.name)]
        for mountpoint in made if not others else []:    # another lab's libvirtd binds there
            try:
                os.rmdir(mountpoint)   # only the bind targets this lab made, and only if empty
            except OSError:
                pass

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self._status_base()
        meta = self.read_meta()
        st.update({"provider": self.provider, "vm": None})
        if self.in_namespace:
            st["libvirtd_pid"] = self._libvirtd_pid()
            if not st["libvirtd_pid"]:
                st["up"] = False
                return st
        if (self.state_dir / "vagrant").exists():
            res = self.vagrant("status", "--machine-readable", check=False, timeout=120)
            for line in res.stdout.decode(errors="replace").splitlines():
                parts = line.split(",")
                if len(parts) >= 4 and parts[2] == "state":
                    st["vm"] = parts[3]
            if st["vm"] == "running":
                st["interface"] = meta.get("capture_interface")
                st["ssh"] = self.ssh_answers()
        st["up"] = st["vm"] == "running" and st["ssh"]
        return st
