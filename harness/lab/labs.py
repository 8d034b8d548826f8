"""Every lab tcplab made on this machine: found, listed with its health, removed.

Labs are found in the state root (:func:`harness.lab.state.trusted_root`): each directory
named like a prefix is a lab, and its record ``lab.json`` says which backend made it and which
namespaces it owns.  A namespace is a lab's only when such a record claims it: ``ip netns``
names are global and anyone may pick them, so a namespace named like a lab without a record is
someone else's and stays (``invoke down`` already leaves it alone, and so does ``--all``).

Also found: what a lab leaves in the root once its directory is gone (its lock file, the
playbook log a failed ``up`` kept), and a lab directory without a record (an ``up`` killed
before it wrote one: no namespace of it can exist yet, since the record comes first).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field

from harness.lab import BACKENDS, get_backend, net
from harness.lab.base import Backend
from harness.lab.state import FAILED_UP_LOG, PREFIX_RE, LabBusy, LabState, trusted_root
from harness.util import LabError, progress, require_root

DEFAULT_BACKEND = "netns"


@dataclass
class Found:
    """One lab in the state root."""

    prefix: str
    backend: str | None                      # from its record; None: no record
    namespaces: list = field(default_factory=list)   # claimed by its record


def backend_for(prefix: str, backend: str | None = None, **kw) -> Backend:
    """The backend of lab ``prefix``: the one its record names (netns when it has none), or
    ``backend``, which must then agree with the record."""
    recorded = LabState(prefix).read_meta().get("backend")
    if backend and recorded and backend != recorded:
        raise LabError(f"lab '{prefix}' was made by the {recorded} backend, not {backend}: "
                       f"use --backend {recorded}, or `invoke down --prefix {prefix}` first")
    name = backend or recorded or DEFAULT_BACKEND
    if name not in BACKENDS:                 # a record from another version of tcplab
        name = DEFAULT_BACKEND
    return get_backend(name, prefix, **kw)


def find_labs() -> list[Found]:
    """Every lab directory in the state root, sorted by prefix ([] when there is no root)."""
    root = trusted_root(create=False)
    if root is None:
        return []
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if PREFIX_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            meta = LabState(entry.name).read_meta()
            found.append(Found(entry.name, meta.get("backend"), list(meta.get("namespaces", []))))
    return found


def leftovers() -> list[str]:
    """Paths tcplab leaves in the state root once a lab's directory is gone: lock files and
    the logs failed ``up`` runs kept."""
    root = trusted_root(create=False)
    if root is None:
        return []
    labs = {f.prefix for f in find_labs()}
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        stem = entry.name.removesuffix(".lock")
        if entry.name.endswith(".lock") and PREFIX_RE.fullmatch(stem) and stem not in labs:
            out.append(entry.path)
        tail = FAILED_UP_LOG.format(prefix="")
        if entry.name.endswith(tail) and PREFIX_RE.fullmatch(entry.name[:-len(tail)]):
            out.append(entry.path)
    return out


def _remove_leftover(path: str) -> bool:
    """Remove a leftover; a lock file only while nobody holds it (removed while held here)."""
    if not path.endswith(".lock"):
        os.unlink(path)
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def down_all(log=progress) -> dict:
    """``invoke down --all``: every lab in the state root, each under its lock, with its own
    backend's ``down``; then the leftovers.  A busy lab (a command is using it) is kept and
    named.  Returns {"removed": [...], "busy": [...], "failed": {prefix: error}}."""
    require_root("invoke down --all")
    res = {"removed": [], "busy": [], "failed": {}}
    for lab in find_labs():
        log(f"down: lab '{lab.prefix}' ({lab.backend or 'no record'})")
        try:
            b = backend_for(lab.prefix)
            with b.locked():
                b.down()
            res["removed"].append(lab.prefix)
        except LabBusy:
            res["busy"].append(lab.prefix)
        except LabError as e:
            res["failed"][lab.prefix] = str(e)
    for path in leftovers():
        if _remove_leftover(path):
            log(f"down: removed {path}")
    return res


def status_all() -> list[dict]:
    """``invoke status --all``: each lab's own ``status()`` (or the error it gave), plus the
    namespaces its record claims and whether each exists."""
    have = net.namespaces()
    rows = []
    for lab in find_labs():
        try:
            st = backend_for(lab.prefix).status()
        except LabError as e:
            st = {"prefix": lab.prefix, "backend": lab.backend, "up": False, "error": str(e)}
        st.setdefault("namespaces", {})
        for name in lab.namespaces:
            st["namespaces"].setdefault(name, name in have)
        st["record"] = lab.backend is not None
        rows.append(st)
    return rows


def _daemon(st: dict) -> str:
    if "labhost" in st:                      # a remote lab: its daemons are on its lab host
        return f"on {st['labhost'] or '?'}"
    for key, label in (("sshd_pid", "sshd"), ("qemu_pid", "qemu"), ("libvirtd_pid", "libvirtd")):
        if key in st:
            extra = f", VM {st['vm']}" if st.get("vm") else ""
            return f"{label} {st[key]}{extra}" if st[key] else f"{label} not running"
    if "vm" in st:
        return f"VM {st['vm'] or 'absent'}"
    return "-"


def format_status_all(rows: list[dict]) -> str:
    """One line per lab: prefix, backend, up, namespaces, daemon, SSH, provisioned."""
    if not rows:
        return "no labs"
    yes = {True: "yes", False: "no"}
    lines = [f"{'PREFIX':<11} {'BACKEND':<8} {'UP':<4} {'SSH':<4} {'PROV':<5} "
             f"{'DAEMON':<22} NAMESPACES"]
    for st in rows:
        nss = " ".join(f"{n}{'' if ok else '(gone)'}" for n, ok in st["namespaces"].items())
        lines.append(f"{st.get('prefix', '?'):<11} {st.get('backend') or '?':<8} "
                     f"{yes[bool(st.get('up'))]:<4} {yes[bool(st.get('ssh'))]:<4} "
                     f"{yes[bool(st.get('provisioned'))]:<5} {_daemon(st):<22} {nss or '-'}")
        if not st["record"]:
            lines.append(f"{'':<11} (no lab.json: an `up` was stopped before it wrote one)")
        if st.get("error"):
            lines.append(f"{'':<11} error: {st['error']}")
    return "\n".join(lines)
