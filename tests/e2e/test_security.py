"""The lab's SSH is locked down: per-lab keys with 0600 permissions, sshd bound only to the lab
address, no password logins, strict host-key checking; state paths cannot be steered outside.

And the state root is trusted only when it is root's alone (issue 15, finding 2): each attack
a local user could prepare against a state root in a world-writable place (the docs once
suggested ``/tmp/tcplab-ci``) is prepared here for real, as user ``nobody``, and the real
commands must refuse it without touching what the attack aims at.  A stale pid file (finding
6) must not make ``down`` kill the process that now has that PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import paramiko
import pytest

from tests.conftest import ROOT, new_prefix, require_lab_machine

pytestmark = pytest.mark.e2e
NOBODY = 65534


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


def test_keys_and_state_dirs_are_root_only_even_with_a_loose_umask(lab_factory):
    old = os.umask(0)
    try:
        lab = lab_factory(provision=False)
    finally:
        os.umask(old)
    for d in (lab.state_dir, lab.state_dir / "ansible" / "home", lab.state_dir / "vm" / "tmp"):
        st = os.lstat(d)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700, (d, oct(st.st_mode))
    for name in ("lab.json", "sshd_config", "id_ed25519", "known_hosts"):
        assert stat.S_IMODE(os.lstat(lab.state_dir / name).st_mode) == 0o600, name


def test_sshd_runs_with_strict_modes(lab_factory):
    """StrictModes (sshd's default) is on: the state root's checks imply what it checks."""
    lab = lab_factory(provision=False)
    assert "StrictModes" not in (lab.state_dir / "sshd_config").read_text()
    out = subprocess.run(lab.vm_exec_prefix() + ["/usr/sbin/sshd", "-T", "-f",
                         str(lab.state_dir / "sshd_config")], capture_output=True, text=True)
    assert "strictmodes yes" in out.stdout, out.stderr


# --- attacks on the state root (issue 15, finding 2) ----------------------------------------

def as_nobody(script: str) -> None:
    """Run a shell script as user nobody: how a local user would prepare an attack."""
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    "sh", "-ec", script], check=True, capture_output=True, timeout=30)


def invoke(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TCPLAB_STATE_ROOT=str(root))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _scrub(root: Path) -> None:
    """Remove whatever a tcplab that fell for an attack made: processes naming the root,
    namespaces of the labs under it, the root."""
    from harness.util import kill_pids, pids_mentioning
    kill_pids(pids_mentioning(str(root) + "/"), signal.SIGKILL, wait=5)
    prefixes = {p.name.removesuffix(".lock") for p in root.iterdir()} if root.is_dir() else set()
    for ns in namespaces():
        if ns.rsplit("-", 1)[0] in prefixes:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _state_root(path: str, make):
    require_lab_machine()
    root = Path(f"{path}{uuid.uuid4().hex[:8]}")
    make(root)
    try:
        yield root
    finally:
        _scrub(root)


@pytest.fixture
def user_root():
    """A state root that user nobody made under /tmp."""
    with _state_root("/tmp/tcplab-atk", lambda r: as_nobody(f"mkdir -m 755 {r}")) as root:
        yield root


@pytest.fixture
def trusted_root():
    """A state root of the tests' own, root's alone."""
    with _state_root("/run/tcplab-sec", lambda r: r.mkdir(mode=0o755)) as root:
        yield root


@pytest.fixture
def victim():
    """Root's own directory, a file in it, and a process: what the attacks aim at."""
    require_lab_machine()
    d = Path(f"/run/victim{uuid.uuid4().hex[:8]}")
    d.mkdir(mode=0o755)
    (d / "precious").write_text("keep me\n")
    os.chmod(d / "precious", 0o644)
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield d, proc
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (oct(p.lstat().st_mode), p.read_bytes() if p.is_file() else b"")
            for p in [d, *sorted(d.rglob("*"))]}


def refused(r: subprocess.CompletedProcess) -> bool:
    return r.returncode != 0 and "refusing to use" in r.stderr and \
        len(r.stderr.strip().splitlines()) == 1


def test_a_symlink_planted_at_a_labs_state_dir_is_refused(user_root, victim):
    """Once, `up` chmodded the link's target to 0700 and wrote keys and configs into it."""
    target, _ = victim
    prefix = new_prefix("atk")
    as_nobody(f"ln -s {target} {user_root}/{prefix}")
    before = snapshot(target)
    for task in ("up", "status", "down"):
        r = invoke(task, "--prefix", prefix, root=user_root)
        assert refused(r), (task, r.returncode, r.stdout[-500:], r.stderr[-1500:])
    assert snapshot(target) == before
    assert not {f"{prefix}-host", f"{prefix}-vm"} & namespaces()


def test_a_symlink_planted_at_a_labs_lock_is_refused(user_root, victim):
    """Once, the lock was opened with "w": root truncated the link's target."""
    target, _ = victim
    prefix = new_prefix("atk")
    as_nobody(f"ln -s {target}/precious {user_root}/{prefix}.lock")
    for task in ("up", "demo"):
        r = invoke(task, "--prefix", prefix, root=user_root)
        assert refused(r), (task, r.returncode, r.stderr[-1500:])
    assert (target / "precious").read_text() == "keep me\n"
    assert not {f"{prefix}-host", f"{prefix}-vm"} & namespaces()


@pytest.mark.parametrize("how", ["group-writable", "under /tmp"])
def test_a_root_others_can_write_in_is_refused(how):
    """Root-owned, but a group (or, above it, everyone) may add or swap names in it."""
    require_lab_machine()
    if how == "group-writable":
        root = Path(f"/run/tcplab-gw{uuid.uuid4().hex[:8]}")
        root.mkdir()
        os.chown(root, 0, NOBODY)
        os.chmod(root, 0o775)
    else:
        root = Path(f"/tmp/tcplab-tmp{uuid.uuid4().hex[:8]}")
        root.mkdir(mode=0o755)
    prefix = new_prefix("atk")
    try:
        r = invoke("up", "--prefix", prefix, root=root)
        assert refused(r), (r.returncode, r.stderr[-1500:])
        assert ("writable by group or others" in r.stderr), r.stderr
        assert list(root.iterdir()) == [], "tcplab made something in an untrusted root"
        assert not {f"{prefix}-host", f"{prefix}-vm"} & namespaces()
    finally:
        _scrub(root)


def test_a_planted_sshd_pid_is_not_killed(user_root, victim):
    """Once, `down` killed whatever PID the lab's sshd.pid named."""
    _, proc = victim
    prefix = new_prefix("atk")
    d = user_root / prefix
    as_nobody(f"mkdir -m 755 {d} && echo {proc.pid} > {d}/sshd.pid")
    r = invoke("down", "--prefix", prefix, root=user_root)
    assert refused(r), (r.returncode, r.stderr[-1500:])
    assert proc.poll() is None, "down killed the process a planted pid file named"


def test_a_planted_ansible_plugin_is_not_imported(user_root):
    """Once, Ansible ran with ANSIBLE_HOME in the user's directory and imported a callback
    plugin planted there, as root."""
    prefix = new_prefix("atk")
    marker = Path(f"/run/planted{uuid.uuid4().hex[:8]}")      # only root can write in /run
    plugin = (f"open({str(marker)!r}, 'w').write('imported as root')\n"
              "from ansible.plugins.callback import CallbackBase\n"
              "class CallbackModule(CallbackBase):\n"
              "    CALLBACK_VERSION = 2.0\n    CALLBACK_TYPE = 'aggregate'\n"
              "    CALLBACK_NAME = 'planted'\n    CALLBACK_NEEDS_ENABLED = False\n")
    d = f"{user_root}/{prefix}/ansible/home/plugins/callback"
    as_nobody(f"mkdir -p {d} && cat > {d}/planted.py <<'PY'\n{plugin}PY")
    try:
        r = invoke("up", "--prefix", prefix, root=user_root)
        assert refused(r), (r.returncode, r.stderr[-1500:])
        assert not marker.exists(), "root imported a plugin a user planted"
    finally:
        marker.unlink(missing_ok=True)


def test_down_never_deletes_through_a_symlink(trusted_root, victim, monkeypatch):
    """Even in a trusted root (a link root itself made by mistake): refused, nothing of the
    target removed, no process its files name killed."""
    from harness.lab import get_backend
    from harness.util import LabError
    target, proc = victim
    (target / "sshd.pid").write_text(f"{proc.pid}\n")
    (target / "lab.json").write_text(json.dumps({"backend": "netns"}))
    prefix = new_prefix("lnk")
    os.symlink(target, trusted_root / prefix)
    before = snapshot(target)
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(trusted_root))
    with pytest.raises(LabError, match="is a symlink"):
        get_backend("netns", prefix).down()
    assert snapshot(target) == before and proc.poll() is None


# --- stale pid files (issue 15, finding 6) --------------------------------------------------

@pytest.mark.parametrize("record", [True, False], ids=["with-lab.json", "without-lab.json"])
@pytest.mark.parametrize("backend, pidfile", [("netns", "sshd.pid"), ("qemu", "qemu.pid"),
                                              ("vagrant", "libvirtd.pid")])
def test_down_does_not_kill_what_a_stale_pid_file_names(trusted_root, victim, monkeypatch,
                                                        backend, pidfile, record):
    """A lab's daemon died and its PID went to another process: status does not count it as
    the lab's, and down leaves it running (it kills only processes that name the lab)."""
    from harness.lab import get_backend
    _, proc = victim
    prefix = new_prefix("stale")
    sd = trusted_root / prefix
    sd.mkdir(mode=0o700)
    (sd / pidfile).write_text(f"{proc.pid}\n")
    if record:
        (sd / "lab.json").write_text(json.dumps({"backend": backend, "prefix": prefix,
                                                 "provider": "libvirt"}))
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(trusted_root))
    kw = {"provider": "libvirt"} if backend == "vagrant" else {}
    b = get_backend(backend, prefix, **kw)
    st = b.status()
    assert not st["up"] and proc.pid not in st.values(), st
    b.down()
    assert proc.poll() is None, f"{backend} down killed the process {pidfile} named"
    assert not sd.exists()
