"""Per-lab SSH material: a client key the harness and Ansible log in with, and (for labs whose
sshd the harness runs itself) a host key, so the client can check the host strictly.

Keys live in the lab's state directory with mode 0600; nothing goes to ~/.ssh.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.lab.state import write_file
from harness.util import run


def ensure_keypair(path: Path, comment: str) -> str:
    """Make an ed25519 key at ``path`` (``path.pub`` beside it) unless it exists; return the
    public key line."""
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            what="ssh-keygen")
    os.chmod(path, 0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def write_known_hosts(path: Path, host: str, host_pub: str, port: int = 22) -> None:
    """known_hosts entry for ``host``: ``keytype key`` from the host's public key line."""
    keytype, key = host_pub.split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    write_file(path, f"{name} {keytype} {key}\n", 0o600)
