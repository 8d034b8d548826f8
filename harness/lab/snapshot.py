"""The qemu backend's provisioned-guest snapshot: boot and provision once, resume every later lab.

Booting the Debian guest under TCG takes ~16 s to sshd and the playbook ~25 s more; resuming a
saved, already provisioned guest takes a few seconds.  A snapshot is made by the first lab that
needs it (``up`` from nothing may stay slow) and kept in the user's cache beside the images::

    ~/.cache/tcplab/snapshots/<key>/      ($TCPLAB_QEMU_SNAPSHOTS/<key>/ when set)
        disk.qcow2    the guest's disk as the playbook left it (a qcow2 over the image's
                      rootfs.raw; every lab resumes over an overlay of its own on top)
        state.mig     qemu's migration stream of the stopped guest (RAM and devices)
        meta.json     what it was made from, and how long that took

The key (:func:`snapshot_key`) covers everything the saved guest depends on: the image recipe,
the responder's sources, the playbook, the resume agent, qemu's version, the accelerator and
the machine's command line.  A change to any of them names another directory, so a stale
snapshot is never resumed; it is rebuilt.  After a build only the :data:`KEEP` newest stay
(:func:`prune`); ``rm -rf ~/.cache/tcplab/snapshots`` removes them all (labs already running
keep the files they opened).

How it is made (:func:`build`, driven by :class:`harness.lab.qemu.QemuBackend`, in the lab's own
host side): the guest boots from the image with *template* SSH keys (made for the build, kept in
the lab's state directory, thrown away with it), the playbook provisions it, the resume agent
(:mod:`harness.lab.resume_agent`) is copied in and started, the host's SSH connections are
ended, the agent stops sshd and every session, then QMP ``stop`` and ``migrate`` to
``exec:cat > state.mig``, and ``quit``.

How a lab resumes it (:func:`rotate`): qemu starts with ``-incoming "exec:cat state.mig"`` over
a new overlay of ``disk.qcow2``, the machine's command line identical to the build's; the
guest runs on where it was stopped.  Before anything reaches it over the network the harness
tells the agent, over virtio-serial, the lab's own SSH host key and authorized key, the host's
clock and fresh random bytes (qemu's ``vmgenid`` device also tells the guest kernel that it was
resumed, and it reseeds); the agent writes the keys and starts sshd.  No template key is ever
accepted or presented by a lab: the lab's known_hosts is strict from its first connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.lab import image
from harness.lab.base import responder_tree_hash
from harness.lab.state import SAFE_PATH_RE
from harness.util import PROJECT_ROOT, LabError, progress

SNAPSHOT_VERSION = 1          # bump when build() changes what it makes
KEEP = 3                      # snapshots kept (the newest); older ones are pruned after a build
SNAPSHOTS_ENV = "TCPLAB_QEMU_SNAPSHOTS"
AGENT_PORT = "org.tcplab.agent"
AGENT_GUEST_PATH = "/usr/local/sbin/tcplab-resume-agent"
AGENT_SOURCE = Path(__file__).with_name("resume_agent.py")
MIGRATE_TIMEOUT = 300
AGENT_TIMEOUT = 90


def snapshots_root() -> Path:
    """``$TCPLAB_QEMU_SNAPSHOTS`` or ``<cache>/tcplab/snapshots``; its path goes on qemu's
    command line, so only letters, digits and ``. _ - /``."""
    raw = os.environ.get(SNAPSHOTS_ENV) or str(image.cache_root().parent / "snapshots")
    if not SAFE_PATH_RE.fullmatch(raw):
        raise LabError(f"the snapshot directory {raw!r} may contain only letters, digits and "
                       f". _ - / (it goes on qemu's command line); set {SNAPSHOTS_ENV}")
    return Path(raw)


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def qemu_version(qemu: str) -> str:
    res = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    return res.stdout.splitlines()[0].strip() if res.stdout else "unknown"


def key_parts(img: Path, machine: list[str], qemu: str) -> dict:
    """What a snapshot depends on (:func:`snapshot_key` hashes it)."""
    return {"version": SNAPSHOT_VERSION, "image": img.name, "responder": responder_tree_hash(),
            "provision": tree_hash(PROJECT_ROOT / "provision"),
            "agent": hashlib.sha256(AGENT_SOURCE.read_bytes()).hexdigest(),
            "qemu": qemu_version(qemu), "machine": machine}


def snapshot_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """One snapshot directory (ready or being built)."""

    dir: Path

    @property
    def key(self) -> str:
        return self.dir.name

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def state(self) -> Path:
        return self.dir / "state.mig"

    @property
    def meta(self) -> Path:
        return self.dir / "meta.json"

    def ready(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.state, self.meta))

    def building(self) -> "Snapshot":
        return Snapshot(self.dir.with_name(self.dir.name + ".build"))

    def incoming(self) -> str:
        """qemu's ``-incoming`` value that reads the saved guest."""
        return f"exec:cat {shlex.quote(str(self.state))}"

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def snapshot_for(parts: dict) -> Snapshot:
    return Snapshot(snapshots_root() / snapshot_key(parts))


@contextlib.contextmanager
def locked(snap: Snapshot):
    """One builder per snapshot: a second lab waits for the first's build, then resumes it."""
    snap.dir.parent.mkdir(parents=True, exist_ok=True)
    with open(snap.dir.with_name(snap.key + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"snapshot {snap.key}: another lab is making it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- the guest agent (virtio-serial) ---------------------------------------------------------

def agent_call(sock: Path, request: dict, timeout: float = AGENT_TIMEOUT) -> dict:
    """Send ``request`` to the resume agent over the lab's virtio-serial socket; its answer.
    The agent answers only once the guest runs, so this also waits for the resume."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(sock))
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise LabError(f"the guest agent's socket {sock} did not open within "
                               f"{timeout:g} s") from None
            time.sleep(0.1)
    with s:
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except socket.timeout:
                data = None
            if not data:
                raise LabError(f"the guest agent did not answer {request['op']!r} within "
                               f"{timeout:g} s (socket {sock})")
            buf += data
    reply = json.loads(buf.split(b"\n", 1)[0])
    if not reply.get("ok"):
        raise LabError(f"the guest agent could not {request['op']}: {reply.get('error')}")
    return reply


def rotate(sock: Path, host_key: Path, authorized_keys: Path) -> dict:
    """Give a resumed guest the lab's own host key and authorized key, the host's clock and
    fresh random bytes; sshd starts with them.  Checks the host key the guest now has."""
    host_pub = host_key.with_name(host_key.name + ".pub").read_text()
    reply = agent_call(sock, {"op": "rotate", "time": time.time(), "seed": os.urandom(64).hex(),
                              "host_key": host_key.read_text(), "host_key_pub": host_pub,
                              "authorized_keys": authorized_keys.read_text()})
    if reply.get("host_key_pub", "").split()[:2] != host_pub.split()[:2]:
        raise LabError("the resumed guest does not present the lab's host key after the "
                       "rotation; remove the snapshot (rm -rf "
                       f"{snapshots_root()}) and run `invoke up` again")
    return reply


def install_agent(ssh) -> None:
    """Copy the resume agent into the template guest and start it (a transient unit)."""
    src = AGENT_SOURCE.read_text()
    ssh.run(f"install -m 0755 /dev/stdin {AGENT_GUEST_PATH} <<'TCPLAB_AGENT_EOF'\n{src}\n"
            f"TCPLAB_AGENT_EOF\n"
            f"systemd-run --unit=tcplab-resume-agent --collect /usr/bin/python3 "
            f"{AGENT_GUEST_PATH}", timeout=60)


# --- saving the guest (QMP) ------------------------------------------------------------------

@contextlib.contextmanager
def _qmp(sock: Path, wait: float = 30):
    """A QMP session with qemu (qemu.qmp, the QEMU project's own client); waits up to
    ``wait`` seconds for the socket to answer."""
    from qemu.qmp.legacy import QEMUMonitorProtocol
    t0 = time.monotonic()
    qmp = QEMUMonitorProtocol(str(sock))
    while True:
        try:
            qmp.connect()
            break
        except Exception:           # noqa: BLE001 -- qemu.qmp's ConnectError and OSErrors
            if time.monotonic() - t0 > wait:
                raise LabError(f"qemu's QMP socket {sock} did not answer within {wait:g} s")
            time.sleep(0.05)
    try:
        qmp.settimeout(60)
        yield qmp
    finally:
        with contextlib.suppress(Exception):
            qmp.close()


def _migration_done(qmp, what: str, t0: float, timeout: float = MIGRATE_TIMEOUT) -> None:
    """Wait for ``query-migrate`` to say completed; LabError on failed/cancelled/timeout."""
    while True:
        st = qmp.cmd("query-migrate")
        status = st.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled") or time.monotonic() - t0 > timeout:
            raise LabError(f"{what} failed ({status}): "
                           f"{st.get('error-desc', 'see the console log')}")
        time.sleep(0.05)


def save(qmp_sock: Path, out: Path) -> float:
    """Stop the guest and write qemu's migration stream to ``out`` (through ``.tmp``); quit
    qemu.  Returns the seconds the save took."""
    t0 = time.monotonic()
    tmp = out.with_name(out.name + ".tmp")
    with _qmp(qmp_sock) as qmp:
        qmp.cmd("stop")
        # The default cap (32 MiB/s) is for live migration over a network, not a local file.
        qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 30})
        qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(tmp))}")
        _migration_done(qmp, "saving the guest", t0)
        qmp.cmd("quit")
    os.replace(tmp, out)
    return time.monotonic() - t0


def resume(qmp_sock: Path) -> float:
    """Wait until qemu (started with ``-incoming``) has read the saved guest, then let it run
    (it was saved stopped, so it stays paused until told).  Returns the seconds the load
    took."""
    t0 = time.monotonic()
    with _qmp(qmp_sock) as qmp:
        _migration_done(qmp, "loading the saved guest", t0)
        loaded = time.monotonic() - t0
        qmp.cmd("cont")
    return loaded


def prune(keep: int = KEEP) -> list[str]:
    """Remove all but the ``keep`` newest ready snapshots (a student who edits the responder
    makes a new one per edit).  One whose lock is held (being built, or waited for) stays.
    Labs running on a removed one keep their open files; a lab that starts again resumes the
    current one."""
    root = snapshots_root()
    if not root.is_dir():
        return []
    ready = sorted((Snapshot(d) for d in root.iterdir()
                    if d.is_dir() and not d.name.endswith(".build") and Snapshot(d).ready()),
                   key=lambda sn: sn.meta.stat().st_mtime, reverse=True)
    gone = []
    for snap in ready[keep:]:
        with open(snap.dir.with_name(snap.key + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            snap.discard()
            gone.append(snap.key)
    return gone


def write_meta(snap: Snapshot, parts: dict, **extra) -> None:
    snap.meta.write_text(json.dumps(dict(parts, key=snap.key, made=time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra), indent=2) + "\n")
