"""The lab backend interface: one shape for every way of making the lab.

A backend makes a host side (192.168.56.1 on an interface named ``vboxnet0`` where it can) and
a lab VM (192.168.56.100) joined by a host-only network, starts SSH in the VM, and provisions it
with the one Ansible playbook ``provision/site.yml``.  Everything above this module (demo,
scenarios, tests) talks to a backend only through :class:`Backend`: no backend-specific
branches elsewhere.

What every backend shares is here and composed, not inherited from another backend: the lab's
state directory and record (:class:`harness.lab.state.LabState`), its namespaces
(:class:`harness.lab.net.Namespace`; ``host_namespace`` is the host side's when the backend has
one), the start of ``up`` (:meth:`Backend._begin_up`: refuse namespaces tcplab did not make,
make the state directory, write the record) and the end of ``down``
(:meth:`Backend._teardown`: kill the lab's processes, delete its namespaces, remove its state).

Lab names ("prefixes") are validated so that nothing a user types can reach a namespace, file or
process outside the lab: ``[a-z][a-z0-9]{0,9}`` (short, because interface and namespace names are
derived from it).
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.lab import firewall, net
from harness.lab.net import Namespace
from harness.lab.state import (DEFAULT_PREFIX, PREFIX_RE, STATE_ROOT_ENV, LabState,  # noqa: F401
                               state_root, validate_prefix)
from harness.util import (PROJECT_ROOT, LabError, kill_pids, pids_mentioning, progress,
                          require_root, require_tools)
from responder.contract import DEFAULT_MARK as RST_MARK  # noqa: F401  (the lab's RST rule)
from responder.contract import HOST_IP, LAB_PORT, VM_IP  # noqa: F401

__all__ = ["ANSIBLE_DIRS", "DEFAULT_PREFIX", "HOST_IP", "LAB_PORT", "NETMASK_BITS", "PREFIX_RE",
           "RST_MARK", "STATE_ROOT_ENV", "VM_IP", "Backend", "LabState", "SshEndpoint",
           "responder_tree_hash", "state_root", "tree_hash", "validate_prefix"]

NETMASK_BITS = 24
#: Ansible's home, temp files and SSH control sockets, inside the lab's state directory.
ANSIBLE_DIRS = ("ansible/cp", "ansible/tmp", "ansible/home")


def tree_hash(*trees: str) -> str:
    """Hash of the Python sources under each of the project's ``trees`` (directories)."""
    h = hashlib.sha256()
    for tree in trees:
        src = PROJECT_ROOT / tree
        for p in sorted(src.rglob("*.py")):
            h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def responder_tree_hash() -> str:
    """Hash of the responder sources: provisioning reruns when a student changes them."""
    return tree_hash("responder")


@dataclass
class SshEndpoint:
    """How to reach the lab VM's sshd: used by paramiko (harness.run.ssh) and by Ansible."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    proxy_command: str | None = None   # run on this machine; %h and %p are substituted

    def ansible_ssh_args(self, control_dir: Path | None) -> str:
        """ssh's options for Ansible; with ``control_dir``, a ControlPersist master whose
        socket is there (Ansible's own strategy: one SSH command per task), without (Mitogen:
        one connection for the play) none, so nothing outlives the playbook."""
        # The paths come from the state root, whose characters are checked (no spaces).
        args = [f"-o UserKnownHostsFile={self.known_hosts}", "-o StrictHostKeyChecking=yes",
                "-o IdentitiesOnly=yes", "-o BatchMode=yes"]
        if control_dir is not None:
            args += ["-o ControlMaster=auto", "-o ControlPersist=60s",
                     f"-o ControlPath={control_dir}/%C"]
        if self.proxy_command:
            args.append(f"-o ProxyCommand='{self.proxy_command}'")
        return " ".join(args)


@dataclass
class Backend:
    """Base of every backend.  Subclasses implement ``up``/``down``/``status`` from the
    shared parts below."""

    prefix: str = DEFAULT_PREFIX
    name: str = "base"
    host_ip: str = HOST_IP
    vm_ip: str = VM_IP
    capture_interface: str = "vboxnet0"
    extra: dict = field(default_factory=dict)
    #: the host side's namespace (None: the host side is the namespace tcplab runs in)
    host_namespace: Namespace | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.state = LabState(self.prefix)          # validates the prefix

    # --- state ------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.state.dir

    @property
    def meta_file(self) -> Path:
        return self.state.meta_file

    def read_meta(self) -> dict:
        return self.state.read_meta()

    def write_meta(self, **updates) -> None:
        self.state.write_meta(**updates)

    def locked(self):
        """Serialise up/down/demo of one lab (two labs with different prefixes do not block)."""
        return self.state.lock()

    # --- namespaces and the host side -------------------------------------------------------
    @property
    def host_ns(self) -> str | None:
        return self.host_namespace.name if self.host_namespace else None

    def namespaces(self) -> list[Namespace]:
        """Every namespace this lab makes (deleted by ``down`` when the lab's record is there)."""
        return [self.host_namespace] if self.host_namespace else []

    def host_exec_prefix(self) -> list[str]:
        """argv prefix that runs a command on the lab's host side (where vboxnet0 lives), for
        a host side on this machine.  Prefer :meth:`host_argv`, which every backend has."""
        return self.host_namespace.exec_prefix() if self.host_namespace else []

    def host_argv(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` on the lab's host side: here, under the host
        namespace's exec prefix; a lab on a lab host, over SSH (:mod:`harness.lab.remote`).
        The capture, the canary and the clients of a run all go through this."""
        return self.host_exec_prefix() + list(argv)

    def host_python_argv(self, module: str, args) -> list[str]:
        """``python -m MODULE ARGS`` of the harness on the lab's host side (here: this
        interpreter, run from the project root; a lab host runs its own copy)."""
        return self.host_argv([sys.executable, "-m", module, *args])

    @property
    def host_side_isolated(self) -> bool:
        """Is the host side a place of the lab's own (a namespace, here or on a lab host), not
        the user's machine itself?  The Scapy client adds an iptables rule there."""
        return self.host_namespace is not None

    def ssh_answers(self, timeout: float = 1.0) -> bool:
        """Does an sshd answer on the VM's port 22, seen from the host side?  Reads the
        banner's first bytes and closes at once."""
        if not self.host_side_isolated:
            try:
                with socket.create_connection((self.vm_ip, 22), timeout=timeout) as s:
                    s.settimeout(timeout)
                    return s.recv(4).startswith(b"SSH-")
            except OSError:
                return False
        script = f"exec 3<>/dev/tcp/{self.vm_ip}/22 && head -c 4 <&3"
        try:
            res = subprocess.run(self.host_argv(["timeout", str(timeout), "bash", "-c", script]),
                                 capture_output=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return False
        return res.stdout.startswith(b"SSH-")

    def exists(self) -> bool:
        """Does anything of this lab exist (so a failed `up` must not remove it)?"""
        return self.state.has_record() or any(ns.exists() for ns in self.namespaces())

    # --- what up, down and status share -----------------------------------------------------
    def _begin_up(self, *subdirs: str, tools: tuple = (), **record) -> None:
        """Check root and ``tools``, refuse namespaces with the lab's names that tcplab did not
        make, make (or check) the state directory and ``subdirs``, and write the lab's record
        ``lab.json`` before any namespace or process exists (so ``down`` finds them, also
        after ``kill -9``)."""
        require_root(f"invoke up --backend {self.name}")
        require_tools(*tools)
        mine = self.state.check() and self.state.has_record()
        foreign = [ns.name for ns in self.namespaces() if ns.exists()] if not mine else []
        if foreign:
            raise LabError(f"namespace(s) {', '.join(foreign)} exist but were not made by "
                           f"tcplab (no {self.meta_file}); choose another --prefix, or remove "
                           f"them with `ip netns del NAME` if they are left-overs")
        self.state.prepare(*subdirs)
        self.write_meta(backend=self.name, prefix=self.prefix, host_ip=self.host_ip,
                        vm_ip=self.vm_ip, namespaces=[ns.name for ns in self.namespaces()],
                        **record)

    def _teardown(self) -> None:
        """Kill every process of the lab, delete its namespaces, remove its state directory.
        Works from what exists (after ``kill -9``, or when nothing is there).  Namespaces are
        deleted only with the lab's record: without it they are someone else's."""
        require_root("invoke down")
        mine = self.state.check() and self.state.has_record()
        present = [ns for ns in self.namespaces() if ns.exists()]
        if present and not mine:
            progress(f"leaving namespace(s) {', '.join(ns.name for ns in present)} alone: "
                     f"tcplab did not make them (no {self.meta_file})")
            present = []
        # Processes inside the namespaces, and those outside that name the state directory
        # (sshd, qemu, libvirtd, SSH ControlPersist masters, ProxyCommands, captures).
        victims = net.ns_pids(*(ns.name for ns in present))
        victims |= set(pids_mentioning(str(self.state_dir) + "/"))
        left = kill_pids(victims, signal.SIGKILL, wait=5)
        if left:
            raise LabError(f"processes of lab '{self.prefix}' survived SIGKILL: {left}")
        for ns in present:
            # A namespace's links go with it (a veth's peer with the pair); so do the iptables
            # rules of a VM namespace.
            ns.delete()
        if self.host_namespace is None:
            # The host side is this machine: the rules a killed run left here (the Scapy
            # peer's), found by the lab's tag.
            for rule in firewall.remove_host_rules(self.prefix):
                progress(f"removed the host rule `{rule}`")
        self.state.remove()

    def _status_base(self) -> dict:
        """The part of ``status()`` every backend shares."""
        self.state.check()                  # LabError when the state is not root's alone
        meta = self.read_meta()
        have = net.namespaces() if self.namespaces() else set()
        return {"backend": self.name, "prefix": self.prefix, "state_dir": str(self.state_dir),
                "record": self.state.has_record(),
                "namespaces": {ns.name: ns.name in have for ns in self.namespaces()},
                "interface": None, "ssh": False,
                "provisioned": meta.get("provisioned_hash") is not None,
                # iptables rules tagged with the lab's name on its host side (None: unreadable)
                "host_rules": self._host_rules(have)}

    def _host_rules(self, namespaces_present) -> list[str] | None:
        if self.host_namespace is not None and self.host_ns not in namespaces_present:
            return []
        return firewall.host_rules(self.prefix, self.host_exec_prefix())

    # --- the interface ----------------------------------------------------------------------
    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def status(self) -> dict:
        raise NotImplementedError

    def ssh_endpoint(self) -> SshEndpoint:
        raise NotImplementedError

    def _endpoint(self) -> SshEndpoint:
        """root@VM:22 with the lab's key and known_hosts, through the host namespace if any."""
        return SshEndpoint(host=self.vm_ip, port=22, user="root",
                           key_file=self.state_dir / "id_ed25519",
                           known_hosts=self.state_dir / "known_hosts",
                           proxy_command=self.host_namespace.proxy_command()
                           if self.host_namespace else None)

    def responder_dir(self) -> str:
        """Where provisioning puts the responder inside the VM."""
        return "/opt/tcplab"

    def inventory_vars(self) -> dict:
        """Backend-specific Ansible variables (merged into the inventory)."""
        return {}
