"""The lab's SSH is locked down: per-lab keys with 0600 permissions, sshd bound only to the lab
address, no password logins, strict host-key checking; state paths cannot be steered outside."""

from __future__ import annotations

import os
import stat
import subprocess

import paramiko
import pytest

pytestmark = pytest.mark.e2e


def test_keys_are_private_and_per_lab(lab_factory):
    a = lab_factory(provision=False)
    b = lab_factory(provision=False)
    for lab in (a, b):
        for name in ("id_ed25519", "ssh_host_ed25519_key", "authorized_keys", "known_hosts"):
            mode = stat.S_IMODE(os.stat(lab.state_dir / name).st_mode)
            assert mode == 0o600, f"{lab.state_dir / name} has mode {oct(mode)}"
        assert stat.S_IMODE(os.stat(lab.state_dir).st_mode) == 0o700
    assert (a.state_dir / "id_ed25519.pub").read_text() != \
        (b.state_dir / "id_ed25519.pub").read_text()


def test_sshd_listens_only_on_the_lab_address(lab_factory):
    lab = lab_factory(provision=False)
    out = subprocess.run(lab.vm_exec_prefix() + ["ss", "-Hltn"], capture_output=True,
                         text=True, check=True).stdout
    listeners = {line.split()[3] for line in out.splitlines()}
    assert listeners == {"192.168.56.100:22"}, listeners


def test_password_login_is_refused_and_host_key_is_checked(lab_factory):
    lab = lab_factory(provision=False)
    ep = lab.ssh_endpoint()
    sock = paramiko.ProxyCommand(ep.proxy_command.replace("%h", ep.host).replace("%p", "22"))
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=10)
        key = t.get_remote_server_key()
        known = paramiko.HostKeys(str(ep.known_hosts))
        assert known.check(ep.host, key), "the VM's host key is not the lab's own"
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password("root", "root")
        assert not t.is_authenticated()
    finally:
        t.close()
        sock.close()


def test_state_root_must_be_absolute(monkeypatch):
    from harness.lab import get_backend
    from harness.util import LabError
    monkeypatch.setenv("TCPLAB_STATE_ROOT", "relative/dir")
    with pytest.raises(LabError, match="must be an absolute path"):
        _ = get_backend("netns", "x").state_dir
