"""The lab backend interface: one shape for every way of making the lab.

A backend makes a host side (192.168.56.1 on an interface named ``vboxnet0`` where it can) and
a lab VM (192.168.56.100) joined by a host-only network, starts SSH in the VM, and provisions it
with the one Ansible playbook ``provision/site.yml``.  Everything above this module (demo,
scenarios, tests) talks to a backend only through :class:`Backend`: no backend-specific
branches elsewhere.

Lab names ("prefixes") are validated so that nothing a user types can reach a namespace, file or
process outside the lab: ``[a-z][a-z0-9]{0,9}`` (short, because interface and namespace names are
derived from it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.util import PROJECT_ROOT, LabError, require_root

HOST_IP = "192.168.56.1"
VM_IP = "192.168.56.100"
NETMASK_BITS = 24
LAB_PORT = 80
RST_MARK = 0x5E

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
DEFAULT_PREFIX = "tcplab"
STATE_ROOT_ENV = "TCPLAB_STATE_ROOT"
DEFAULT_STATE_ROOT = Path("/run/tcplab")


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise LabError(f"invalid lab prefix {prefix!r}: use 1-10 lowercase letters and digits, "
                       f"starting with a letter (e.g. --prefix lab2)")
    return prefix


def state_root() -> Path:
    """Where labs keep their state: ``/run/tcplab`` or ``$TCPLAB_STATE_ROOT``.

    ``invoke down`` removes ``<root>/<prefix>`` and kills every process that names it, so the
    root must be a directory dedicated to tcplab: an absolute path whose last component says
    ``tcplab`` (``/run/tcplab``, ``/tmp/tcplab-ci``), never ``/`` or ``/var`` where a prefix
    such as ``etc`` or ``lib`` would name a system directory."""
    raw = os.environ.get(STATE_ROOT_ENV, str(DEFAULT_STATE_ROOT))
    root = Path(raw)
    if not root.is_absolute():
        raise LabError(f"{STATE_ROOT_ENV}={raw} must be an absolute path")
    root = Path(os.path.normpath(root))
    if "tcplab" not in root.name:
        raise LabError(f"{STATE_ROOT_ENV}={raw} must be a directory dedicated to tcplab, its "
                       f"name containing 'tcplab' (e.g. /run/tcplab or /tmp/tcplab-ci): "
                       f"`invoke down` deletes <root>/<prefix>")
    return root


def responder_tree_hash() -> str:
    """Hash of the responder sources: provisioning reruns when a student changes them."""
    h = hashlib.sha256()
    src = PROJECT_ROOT / "responder"
    for p in sorted(src.rglob("*.py")):
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass
class SshEndpoint:
    """How to reach the lab VM's sshd: used by paramiko (harness.ssh) and by Ansible."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    proxy_command: str | None = None   # run on this machine; %h and %p are substituted

    def ansible_ssh_args(self, control_dir: Path) -> str:
        args = [f"-o UserKnownHostsFile={self.known_hosts}", "-o StrictHostKeyChecking=yes",
                "-o IdentitiesOnly=yes", "-o BatchMode=yes",
                "-o ControlMaster=auto", "-o ControlPersist=60s",
                f"-o ControlPath={control_dir}/%C"]
        if self.proxy_command:
            args.append(f"-o ProxyCommand='{self.proxy_command}'")
        return " ".join(args)


@dataclass
class Backend:
    """Base of every backend.  Subclasses implement the ``_up``/``_down``/``_status`` parts."""

    prefix: str = DEFAULT_PREFIX
    name: str = "base"
    host_ip: str = HOST_IP
    vm_ip: str = VM_IP
    capture_interface: str = "vboxnet0"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        validate_prefix(self.prefix)

    # --- paths -----------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return state_root() / self.prefix

    @property
    def meta_file(self) -> Path:
        return self.state_dir / "lab.json"

    def read_meta(self) -> dict:
        try:
            return json.loads(self.meta_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_meta(self, **updates) -> None:
        meta = self.read_meta()
        meta.update(updates)
        tmp = self.meta_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(self.meta_file)

    @contextlib.contextmanager
    def locked(self):
        """Serialise up/down/demo of one lab (two labs with different prefixes do not block)."""
        require_root("this tcplab command")
        root = state_root()
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
        with open(root / f"{self.prefix}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"lab '{self.prefix}' is busy: another tcplab command is using it "
                               f"(wait for it, or use another --prefix)")
            try:
                yield
            finally:
                if not self.state_dir.exists():     # the lab is gone (down, or a failed up)
                    (root / f"{self.prefix}.lock").unlink(missing_ok=True)
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- the interface ----------------------------------------------------------------------
    def exists(self) -> bool:
        """Does anything of this lab exist (so a failed `up` must not remove it)?"""
        return self.meta_file.exists()

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def status(self) -> dict:
        raise NotImplementedError

    def host_exec_prefix(self) -> list[str]:
        """argv prefix that runs a command on the lab's host side (where vboxnet0 lives)."""
        raise NotImplementedError

    def ssh_endpoint(self) -> SshEndpoint:
        raise NotImplementedError

    def responder_dir(self) -> str:
        """Where provisioning puts the responder inside the VM."""
        return "/opt/tcplab"

    def inventory_vars(self) -> dict:
        """Backend-specific Ansible variables (merged into the inventory)."""
        return {}
