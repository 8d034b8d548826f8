"""The default backend: the lab as two network namespaces on this machine.

    <prefix>-host  vboxnet0 192.168.56.1/24  ──veth──  eth1 192.168.56.100/24  <prefix>-vm
                   (captures, nc)                       (sshd, iptables RST block, responder)

The "VM" namespace shares this machine's kernel and files but has its own interfaces, routes,
iptables rules and sockets, which is all a raw-socket responder and its RST block need.  An
sshd with its own config, host key and pid file runs inside it, so Ansible and paramiko reach
the VM over real SSH, through a ProxyCommand that runs ``nc`` in the host namespace.

Nothing is added to the root namespace: the veth pair is created inside the host namespace with
its peer placed directly in the VM namespace.  Everything the lab writes is under its state
directory (``/run/tcplab/<prefix>``), and ``down`` removes it all, also after ``kill -9``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab import NETMASK_BITS, Backend, SshEndpoint
from harness.util import (LabError, kill_pids, pid_alive, pids_mentioning, progress, require_root,
                   require_tools, run, wait_until)

SSHD = "/usr/sbin/sshd"
TOOLS = ("ip", "ethtool", "iptables", "nc", "ssh", "ssh-keygen", "tshark", "tcpdump")


@dataclass
class NetnsBackend(Backend):
    name: str = "netns"

    # --- names ------------------------------------------------------------------------------
    @property
    def host_ns(self) -> str:
        return f"{self.prefix}-host"

    @property
    def vm_ns(self) -> str:
        return f"{self.prefix}-vm"

    vm_interface = "eth1"

    def host_exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.host_ns]

    def vm_exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.vm_ns]

    def responder_dir(self) -> str:
        # The "VM" shares this machine's files: keep the deployment inside the lab's state.
        return str(self.state_dir / "vm" / "opt" / "tcplab")

    def inventory_vars(self) -> dict:
        return {"ansible_remote_tmp": str(self.state_dir / "vm" / "tmp"),
                "tcplab_vm_manage_packages": False}

    def ssh_endpoint(self) -> SshEndpoint:
        return SshEndpoint(host=self.vm_ip, port=22, user="root",
                           key_file=self.state_dir / "id_ed25519",
                           known_hosts=self.state_dir / "known_hosts",
                           proxy_command=f"ip netns exec {self.host_ns} nc %h %p")

    # --- queries ----------------------------------------------------------------------------
    @staticmethod
    def _namespaces() -> set[str]:
        out = run(["ip", "netns", "list"], what="ip netns list").stdout.decode()
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def _sshd_pid(self) -> int | None:
        try:
            pid = int((self.state_dir / "sshd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def _ssh_banner(self, timeout: float = 1.0) -> bool:
        """Does sshd answer on 192.168.56.100:22, seen from the host side?  Reads the banner
        and closes at once (``nc -w`` would wait out its whole timeout)."""
        script = (f"exec 3<>/dev/tcp/{self.vm_ip}/22 && head -c 4 <&3")
        try:
            res = subprocess.run(self.host_exec_prefix() + ["timeout", str(timeout), "bash", "-c",
                                 script], capture_output=True, timeout=timeout + 2)
        except subprocess.TimeoutExpired:
            return False
        return res.stdout.startswith(b"SSH-")

    def exists(self) -> bool:
        return bool({self.host_ns, self.vm_ns} & self._namespaces())

    # --- up ---------------------------------------------------------------------------------
    def up(self) -> None:
        """Create (or complete) the namespaces, the veth link, sshd and the SSH material.
        Idempotent: every step checks before it acts.  Provisioning, and removing a fresh lab
        whose making failed, is done by :func:`harness.provision.bring_up`, the same for every
        backend."""
        require_root("invoke up")
        require_tools(*TOOLS)
        existing = self._namespaces() & {self.host_ns, self.vm_ns}
        if existing and not self.meta_file.exists():
            raise LabError(f"namespace(s) {', '.join(sorted(existing))} exist but were not made "
                           f"by tcplab (no {self.meta_file}); choose another --prefix, or remove "
                           f"them with `ip netns del NAME` if they are left-overs")
        self._make()

    def _make(self) -> None:
        sd = self.state_dir
        sd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(sd, 0o700)
        for sub in ("vm/opt/tcplab", "vm/tmp", "ansible/cp", "ansible/tmp", "ansible/home"):
            (sd / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.write_meta(backend=self.name, prefix=self.prefix, host_ns=self.host_ns,
                        vm_ns=self.vm_ns, host_ip=self.host_ip, vm_ip=self.vm_ip)

        progress(f"namespaces {self.host_ns} and {self.vm_ns}")
        have = self._namespaces()
        for ns in (self.host_ns, self.vm_ns):
            if ns not in have:
                run(["ip", "netns", "add", ns], what=f"ip netns add {ns}")
            run(["ip", "-n", ns, "link", "set", "lo", "up"], what="ip link set lo up")

        hl = run(["ip", "-n", self.host_ns, "link", "show", self.capture_interface], check=False)
        if hl.returncode != 0:
            progress(f"veth {self.capture_interface} <-> {self.vm_interface}")
            run(["ip", "-n", self.host_ns, "link", "add", self.capture_interface, "type", "veth",
                 "peer", "name", self.vm_interface, "netns", self.vm_ns], what="ip link add veth")
        for ns, dev, ip in ((self.host_ns, self.capture_interface, self.host_ip),
                            (self.vm_ns, self.vm_interface, self.vm_ip)):
            run(["ip", "-n", ns, "addr", "replace", f"{ip}/{NETMASK_BITS}", "dev", dev],
                what=f"ip addr {ip} on {dev}")
            run(["ip", "-n", ns, "link", "set", dev, "up"], what=f"ip link set {dev} up")
            # Veth offloads TX checksums: without this, captures show the kernel's packets with
            # "incorrect" checksums (filled in later, or never, since nothing leaves the machine).
            run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"],
                what=f"ethtool -K {dev} tx off")

        self._start_sshd()

    def _start_sshd(self) -> None:
        sd = self.state_dir
        client_pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        host_pub = ensure_keypair(sd / "ssh_host_ed25519_key", f"tcplab-{self.prefix}-host")
        (sd / "authorized_keys").write_text(client_pub + "\n")
        os.chmod(sd / "authorized_keys", 0o600)
        write_known_hosts(sd / "known_hosts", self.vm_ip, host_pub)
        (sd / "sshd_config").write_text(f"""\
# sshd for tcplab lab '{self.prefix}' (runs inside namespace {self.vm_ns})
ListenAddress {self.vm_ip}:22
HostKey {sd}/ssh_host_ed25519_key
PidFile {sd}/sshd.pid
AuthorizedKeysFile {sd}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
""")
        if self._sshd_pid() is None:
            progress(f"sshd on {self.vm_ip}:22 inside {self.vm_ns}")
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
            run(self.vm_exec_prefix() + [SSHD, "-f", str(sd / "sshd_config")], what="sshd")
        if not wait_until(self._ssh_banner, timeout=10, interval=0.1):
            raise LabError(f"sshd in {self.vm_ns} does not answer on {self.vm_ip}:22 within 10 s; "
                           f"see `ip netns exec {self.vm_ns} {SSHD} -d -f {sd}/sshd_config`")

    # --- down -------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove every namespace, process, file and rule of this lab.  Succeeds when there is
        nothing to remove, and after a crash (works from what exists, not from records)."""
        require_root("invoke down")
        have = self._namespaces() & {self.host_ns, self.vm_ns}
        if have and not self.meta_file.exists():
            # Namespace names are global and anyone may pick them: without the lab's own
            # record that tcplab made them, they are someone else's and stay untouched.
            progress(f"leaving namespace(s) {', '.join(sorted(have))} alone: tcplab did not "
                     f"make them (no {self.meta_file})")
            have = set()
        victims = set()
        for ns in (self.host_ns, self.vm_ns):
            if ns in have:
                out = run(["ip", "netns", "pids", ns], check=False).stdout.decode().split()
                victims |= {int(p) for p in out if p.isdigit()}
        # Processes outside the namespaces that belong to the lab: SSH ControlPersist masters
        # and anything else started with the state directory on its command line.
        victims |= set(pids_mentioning(str(self.state_dir) + "/"))
        pid = self._sshd_pid()
        if pid:
            victims.add(pid)
        left = kill_pids(victims, signal.SIGKILL, wait=5)
        if left:
            raise LabError(f"processes of lab '{self.prefix}' survived SIGKILL: {left}")
        for ns in (self.host_ns, self.vm_ns):
            if ns in have:
                # A namespace's veth end disappears with it, and its peer with the pair; iptables
                # rules live in the VM namespace and go with it too.
                for _ in range(20):
                    if run(["ip", "netns", "del", ns], check=False).returncode == 0:
                        break
                    time.sleep(0.05)
                else:
                    raise LabError(f"could not delete namespace {ns}: "
                                   f"`ip netns pids {ns}` lists what holds it")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        lock = self.state_dir.with_name(f"{self.prefix}.lock")
        if lock.exists():
            lock.unlink()

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        have = self._namespaces()
        meta = self.read_meta()
        st = {"backend": self.name, "prefix": self.prefix, "state_dir": str(self.state_dir),
              "namespaces": {ns: ns in have for ns in (self.host_ns, self.vm_ns)},
              "interface": None, "sshd_pid": self._sshd_pid(), "ssh": False,
              "provisioned": meta.get("provisioned_hash") is not None}
        if self.host_ns in have:
            res = run(["ip", "-n", self.host_ns, "-br", "addr", "show", self.capture_interface],
                      check=False)
            st["interface"] = res.stdout.decode().strip() or None
            st["ssh"] = self._ssh_banner()
        st["up"] = all(st["namespaces"].values()) and st["ssh"]
        return st
