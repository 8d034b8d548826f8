"""Every lab tcplab made on this machine: found, listed with its health, removed.

Labs are found in the state root (:func:`harness.lab.state.trusted_root`): each directory
named like a prefix is a lab, and its record ``lab.json`` says which backend made it and which
namespaces it owns.  A namespace is a lab's only when such a record claims it: ``ip netns``
names are global and anyone may pick them, so a namespace named like a lab without a record is
someone else's and stays (``invoke down`` already leaves it alone, and so does ``--all``).

Also found: what a lab leaves in the root once its directory is gone (its lock file, the
playbook log a failed ``up`` kept, the private directory of a playbook run over several labs
that was killed), and a lab directory without a record (an ``up`` killed before it wrote one:
no namespace of it can exist yet, since the record comes first).

Many labs at once (``invoke up --labs N`` / ``--prefixes a,b,c``): :func:`up_many` takes each
lab's lock, checks that the machine can hold them (:mod:`harness.lab.capacity`), makes them and
provisions them with one playbook run (:func:`harness.lab.provision.bring_up_many`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from dataclasses import dataclass, field

from harness.lab import BACKENDS, get_backend, net
from harness.lab.base import Backend
from harness.lab.provision import RUN_DIR_PREFIX
from harness.lab.state import (FAILED_UP_LOG, PREFIX_RE, LabBusy, LabState, trusted_root,
                               validate_prefix)
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
    """Paths tcplab leaves in the state root once a lab's directory is gone: lock files, the
    logs failed ``up`` runs kept, and the run directories of playbook runs over several labs
    (one in use is locked, and kept by :func:`_remove_leftover`)."""
    root = trusted_root(create=False)
    if root is None:
        return []
    labs = {f.prefix for f in find_labs()}
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(RUN_DIR_PREFIX) and entry.is_dir(follow_symlinks=False):
            out.append(entry.path)
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
    """Remove a leftover; a lock file or a run directory only while nobody holds its lock
    (removed while held here)."""
    run_dir = os.path.basename(path).startswith(RUN_DIR_PREFIX)
    if not path.endswith(".lock") and not run_dir:
        os.unlink(path)
        return True
    try:
        fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY if run_dir else os.O_RDWR)
                     | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if run_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
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


# --- many labs at once ------------------------------------------------------------------------

def lab_count(text) -> int:
    """``--labs N`` as typed: a whole number, 1 or more."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 1:
        return text
    if isinstance(text, str) and text.strip().isdigit() and int(text) >= 1:
        return int(text)
    raise LabError(f"--labs {text!r}: give a number of labs, 1 or more (e.g. --labs 8)")


def lab_prefixes(base: str, n: int) -> list[str]:
    """``base1`` .. ``baseN`` (``invoke up --labs N``), each a valid prefix."""
    if not isinstance(n, int) or n < 1:
        raise LabError(f"--labs {n}: give a number of labs, 1 or more")
    names = [f"{base}{i}" for i in range(1, n + 1)]
    for name in (names[0], names[-1]):
        if not PREFIX_RE.fullmatch(name):
            raise LabError(f"--labs {n} with --prefix {base!r} makes names like {name!r}, "
                           f"which are not valid lab prefixes (1-10 lowercase letters and "
                           f"digits, starting with a letter): use a shorter --prefix")
    return names


def parse_prefixes(text: str) -> list[str]:
    """``--prefixes a,b,c``: each one checked, none twice."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise LabError("--prefixes: give comma-separated lab names, e.g. --prefixes lab1,lab2")
    for name in names:
        validate_prefix(name)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LabError(f"--prefixes names {', '.join(twice)} more than once")
    return names


def up_many(prefixes: list[str], backend: str | None = None, *, verbose: bool = False,
            force: bool = True, log=progress, **kw) -> dict:
    """``invoke up --labs N``: every lab of ``prefixes`` made and provisioned by one playbook
    run, each under its lock.  Refused before anything is made when the machine cannot hold
    them (:func:`harness.lab.capacity.check`).  Returns {prefix: LabUp}; a busy lab (another
    command holds it) is one of them, failed at step ``lock``."""
    from harness.lab.capacity import check_count
    from harness.lab.provision import LabUp, bring_up_many
    require_root("invoke up --labs")
    made = {f.prefix for f in find_labs()}
    new = [p for p in prefixes if p not in made]
    kind = backend or DEFAULT_BACKEND
    check_count(len(new) if kind == "netns" else 0, len(new) if kind != "netns" else 0)
    labs = [backend_for(p, backend, **kw) for p in prefixes]
    out = {p: LabUp(p) for p in prefixes}
    with contextlib.ExitStack() as stack:
        held = []
        for b in labs:
            try:
                stack.enter_context(b.locked())
                held.append(b)
            except LabBusy as e:
                out[b.prefix].step, out[b.prefix].error = "lock", str(e)
        log(f"making {len(held)} lab(s): {', '.join(b.prefix for b in held) or '-'}")
        out.update(bring_up_many(held, verbose=verbose, force=force, log=log))
    return out
