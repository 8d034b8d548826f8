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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.lab import net
from harness.lab.base import ANSIBLE_DIRS, NETMASK_BITS, Backend, SshEndpoint
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab.net import Namespace
from harness.util import LabError, progress, run, wait_until

SSHD = "/usr/sbin/sshd"
SSHD_PAM_ENV = "TCPLAB_SSHD_PAM"
TOOLS = ("ip", "ethtool", "iptables", "nc", "ssh", "ssh-keygen", "tshark", "tcpdump")


def responder_dir_in(state_dir) -> str:
    """Where provisioning puts the responder of the netns lab whose state directory is
    ``state_dir``: the "VM" shares the machine's files, so inside the lab's state.  A function
    of the directory alone, so that :mod:`harness.lab.remote` can name it for a lab on a lab
    host before that host has made it."""
    return str(PurePosixPath(state_dir) / "vm" / "opt" / "tcplab")


def inventory_vars_in(state_dir) -> dict:
    """The Ansible variables of the netns lab whose state directory is ``state_dir``."""
    vm = PurePosixPath(state_dir) / "vm"
    return {"ansible_remote_tmp": str(vm / "tmp"), "ansible_async_dir": str(vm / "tmp" / "async"),
            "tcplab_vm_manage_packages": False}


def root_locked(shadow: Path = Path("/etc/shadow")) -> bool:
    """Is root's password field locked (``!...``, e.g. Ubuntu's default)?  With ``UsePAM no``
    sshd then refuses root even with a key ("User root not allowed because account is
    locked"); with PAM it lets a key in (the lock is on the password)."""
    try:
        for line in shadow.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "root":
                return rest.startswith("!")
    except OSError:
        pass
    return False


def sshd_use_pam() -> bool:
    """``UsePAM`` for a lab's sshd: no (nothing of the host's login stack runs for the lab's
    SSH sessions) unless root's account is locked, where sshd without PAM would refuse root's
    key; ``$TCPLAB_SSHD_PAM`` = yes/no overrides (auto: that rule)."""
    choice = os.environ.get(SSHD_PAM_ENV, "auto")
    if choice not in ("auto", "yes", "no"):
        raise LabError(f"{SSHD_PAM_ENV}={choice!r}: use auto (default), yes or no")
    if choice != "auto":
        return choice == "yes"
    return root_locked()


@dataclass
class NetnsBackend(Backend):
    name: str = "netns"

    vm_interface = "eth1"

    def __post_init__(self):
        super().__post_init__()
        self.host_namespace = Namespace(f"{self.prefix}-host")
        self.vm_namespace = Namespace(f"{self.prefix}-vm")

    # --- names ------------------------------------------------------------------------------
    @property
    def vm_ns(self) -> str:
        return self.vm_namespace.name

    def namespaces(self) -> list[Namespace]:
        return [self.host_namespace, self.vm_namespace]

    def vm_exec_prefix(self) -> list[str]:
        return self.vm_namespace.exec_prefix()

    def responder_dir(self) -> str:
        return responder_dir_in(self.state_dir)

    def inventory_vars(self) -> dict:
        return inventory_vars_in(self.state_dir)

    def ssh_endpoint(self) -> SshEndpoint:
        return self._endpoint()

    # --- up ---------------------------------------------------------------------------------
    def up(self) -> None:
        """Create (or complete) the namespaces, the veth link, sshd and the SSH material.
        Idempotent: every step checks before it acts.  Provisioning, and removing a fresh lab
        whose making failed, is done by :func:`harness.lab.provision.bring_up`, the same for
        every backend."""
        self._begin_up(*ANSIBLE_DIRS, "vm/opt/tcplab", "vm/tmp", "vm/root", tools=TOOLS)
        progress(f"namespaces {self.host_ns} and {self.vm_ns}")
        for ns in self.namespaces():
            ns.make()
        if not net.link_exists(self.host_ns, self.capture_interface):
            progress(f"veth {self.capture_interface} <-> {self.vm_interface}")
            net.veth(self.host_ns, self.capture_interface, self.vm_interface, self.vm_ns)
        for ns, dev, ip in ((self.host_ns, self.capture_interface, self.host_ip),
                            (self.vm_ns, self.vm_interface, self.vm_ip)):
            net.addr_replace(ns, dev, f"{ip}/{NETMASK_BITS}")
            net.link_up(ns, dev)
            net.tx_offload_off(ns, dev)
        self._start_sshd()

    def _start_sshd(self) -> None:
        sd = self.state_dir
        pam = sshd_use_pam()
        client_pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        host_pub = ensure_keypair(sd / "ssh_host_ed25519_key", f"tcplab-{self.prefix}-host")
        self.state.write("authorized_keys", client_pub + "\n")
        write_known_hosts(sd / "known_hosts", self.vm_ip, host_pub)
        # StrictModes stays on (sshd's default): the state root's checks (harness.lab.state)
        # already require what it checks, root-only directories above authorized_keys.
        self.state.write("sshd_config", f"""\
# sshd for tcplab lab '{self.prefix}' (runs inside namespace {self.vm_ns})
ListenAddress {self.vm_ip}:22
HostKey {sd}/ssh_host_ed25519_key
PidFile {sd}/sshd.pid
AuthorizedKeysFile {sd}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM {"yes" if pam else "no"}
PrintMotd no
Subsystem sftp internal-sftp
SetEnv HOME={sd}/vm/root
""")
        if self.state.live_pid("sshd.pid") is None:
            progress(f"sshd on {self.vm_ip}:22 inside {self.vm_ns}")
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
            run(self.vm_exec_prefix() + [SSHD, "-f", str(sd / "sshd_config")], what="sshd")
        if not wait_until(self.ssh_answers, timeout=10, interval=0.1):
            raise LabError(f"sshd in {self.vm_ns} does not answer on {self.vm_ip}:22 within 10 s; "
                           f"see `ip netns exec {self.vm_ns} {SSHD} -d -f {sd}/sshd_config`")

    # --- down -------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove every namespace, process, file and rule of this lab.  Succeeds when there is
        nothing to remove, and after a crash (works from what exists, not from records)."""
        self._teardown()

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self._status_base()
        st["sshd_pid"] = self.state.live_pid("sshd.pid")
        if st["namespaces"][self.host_ns]:
            st["interface"] = net.addr_brief(self.host_ns, self.capture_interface)
            st["ssh"] = self.ssh_answers()
        st["up"] = all(st["namespaces"].values()) and st["ssh"]
        return st
