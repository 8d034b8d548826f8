"""Where labs keep their state, and why root may trust it.

Every lab keeps its files (keys, sshd's config and pid file, Ansible's home, the qemu overlay,
``lab.json``) in ``<state root>/<prefix>``; the root is ``/run/tcplab`` or
``$TCPLAB_STATE_ROOT``, and holds one lock file ``<prefix>.lock`` per lab.  tcplab runs as
root and acts on what it finds there: it kills the processes that name the directory, deletes
it, starts daemons from it, and lets Ansible import plugins from it.  So nothing there may be
anyone else's to choose:

* the root and every directory above it are owned by root and not writable by group or others
  (``/tmp`` is refused: anyone can make names there); a symlink on the way must be root's own,
  and the root itself is no symlink.  This is also what sshd's ``StrictModes`` asks of the
  directories above a lab's ``authorized_keys``, so the lab's sshd keeps that check on;
* a lab's directory (and each directory in it) is made with ``mkdir`` at mode 0700 and then
  checked through a descriptor opened with ``O_NOFOLLOW``: owned by root, a directory, mode
  exactly 0700; an existing one that is not root's, or is writable by others, is refused;
* files are written without following symlinks (``O_NOFOLLOW``, regular files with one link
  only), ``lab.json`` through a fresh temporary file and ``rename``; the lock file is opened
  without truncating or following links;
* ``remove`` deletes a directory only after those checks, with ``shutil.rmtree`` (which works
  on descriptors and never follows a symlink);
* a pid file is believed only if the process it names has the lab's directory on its command
  line (a stale pid file may name a PID the system has since given to another process).

The root's path is put on qemu's and ssh's command lines, so it may only contain letters,
digits and ``. _ - /`` (a space would split into extra ssh options, a comma would end qemu's
``-drive file=`` value).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
from pathlib import Path

from harness.util import LabError, cmdline, pid_alive, require_root

PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,9}")
DEFAULT_PREFIX = "tcplab"
STATE_ROOT_ENV = "TCPLAB_STATE_ROOT"
DEFAULT_STATE_ROOT = Path("/run/tcplab")
SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]*")
META = "lab.json"
FAILED_UP_LOG = "{prefix}-failed-up-ansible.log"


class LabBusy(LabError):
    """Another tcplab command holds the lab's lock."""


def validate_prefix(prefix: str) -> str:
    """A lab's name: ``[a-z][a-z0-9]{0,9}`` (short: interface and namespace names derive from
    it), matched whole (``"lab\\n"`` is refused)."""
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise LabError(f"invalid lab prefix {prefix!r}: use 1-10 lowercase letters and digits, "
                       f"starting with a letter (e.g. --prefix lab2)")
    return prefix


def state_root() -> Path:
    """Where labs keep their state: ``/run/tcplab`` or ``$TCPLAB_STATE_ROOT``.

    ``invoke down`` removes ``<root>/<prefix>`` and kills every process that names it, so the
    root must be a directory dedicated to tcplab: an absolute path whose last component says
    ``tcplab`` (``/run/tcplab``, ``/run/tcplab-ci``), never ``/`` or ``/var`` where a prefix
    such as ``etc`` or ``lib`` would name a system directory.  Only the name is checked here;
    :func:`trusted_root` checks the directories themselves."""
    raw = os.environ.get(STATE_ROOT_ENV, str(DEFAULT_STATE_ROOT))
    if not raw.startswith("/"):
        raise LabError(f"{STATE_ROOT_ENV}={raw} must be an absolute path")
    if not SAFE_PATH_RE.fullmatch(raw):
        raise LabError(f"{STATE_ROOT_ENV}={raw!r} may contain only letters, digits and . _ - / "
                       f"(the path goes on ssh's and qemu's command lines, where a space or a "
                       f"comma would change their meaning); e.g. /run/tcplab-ci")
    root = Path(os.path.normpath(raw))
    if "tcplab" not in root.name:
        raise LabError(f"{STATE_ROOT_ENV}={raw} must be a directory dedicated to tcplab, its "
                       f"name containing 'tcplab' (e.g. /run/tcplab or /run/tcplab-ci): "
                       f"`invoke down` deletes <root>/<prefix>")
    return root


def _refuse(path: str, why: str) -> LabError:
    return LabError(f"refusing to use {path} for tcplab's state ({STATE_ROOT_ENV}): it {why}; "
                    f"only root may be able to change what tcplab (running as root) keeps "
                    f"there. Use a directory that only root can write, e.g. /run/tcplab")


def _check_trusted(path: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory")
    if st.st_uid != 0:
        raise _refuse(path, f"is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        raise _refuse(path, f"is writable by group or others (mode "
                            f"{oct(stat.S_IMODE(st.st_mode))})")


def _resolve_trusted(path: str, create: bool, depth: int = 0) -> str | None:
    """The real path of directory ``path``, checking every directory from ``/`` down (and
    every symlink met on the way, which must be root's, and its target the same way).  A
    missing directory is made (0755) when ``create``; otherwise None is returned."""
    if depth > 8:
        raise _refuse(path, "goes through too many symlinks")
    cur = "/"
    _check_trusted(cur, os.lstat(cur))
    for part in [p for p in path.split("/") if p]:
        nxt = os.path.join(cur, part)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(nxt, 0o755)
            st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != 0:
                raise _refuse(nxt, f"is a symlink owned by uid {st.st_uid}")
            # cur is a real, checked path, so resolving '..' in the target lexically is exact.
            target = os.path.normpath(os.path.join(cur, os.readlink(nxt)))
            cur = _resolve_trusted(target, create, depth + 1)
            if cur is None:
                return None
            continue
        _check_trusted(nxt, st)
        cur = nxt
    return cur


def trusted_root(create: bool = False) -> Path | None:
    """The state root, checked (see the module's docstring); made (0755) when missing and
    ``create``, else None when missing.  Raises LabError when anyone but root could change it."""
    root = state_root()
    parent = _resolve_trusted(str(root.parent), create)
    if parent is None:
        return None
    real = os.path.join(parent, root.name)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        if not create:
            return None
        os.mkdir(real, 0o755)           # never follows a symlink planted there meanwhile
        st = os.lstat(real)
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(str(root), "is a symlink")
    _check_trusted(str(root), st)
    return root


def _private_dir(path: Path) -> None:
    """Make ``path`` (0700) unless it exists, then check it through an ``O_NOFOLLOW``
    descriptor: a root-owned directory, not writable by others, mode exactly 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _refuse(str(path), f"cannot be opened as a directory without following links "
                                 f"({e.strerror})") from None
    try:
        st = os.fstat(fd)
        _check_trusted(str(path), st)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)        # narrowing a root-only directory's mode is safe
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
            raise _refuse(str(path), "does not keep mode 0700")
    finally:
        os.close(fd)


def write_file(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write ``path`` without following a symlink or writing into a file with other names
    (hard links), with exactly ``mode``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        raise LabError(f"cannot write {path} ({e.strerror}): tcplab writes its state only to "
                       f"regular files, never through a symlink") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise LabError(f"refusing to write {path}: not a regular file with a single link")
        os.ftruncate(fd, 0)
        os.fchmod(fd, mode)
        data = text.encode() if isinstance(text, str) else text
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _nofollow(path, flags: int) -> int:
    """``open(..., opener=_nofollow)``: never through a symlink."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_file(path: Path) -> str:
    """The text of ``path``, not following a symlink (OSError when absent or a link)."""
    with open(path, errors="replace", opener=_nofollow) as f:
        return f.read()


class LabState:
    """One lab's state directory ``<root>/<prefix>``, its record ``lab.json`` and its lock."""

    def __init__(self, prefix: str):
        self.prefix = validate_prefix(prefix)

    @property
    def dir(self) -> Path:
        return state_root() / self.prefix

    @property
    def meta_file(self) -> Path:
        return self.dir / META

    @property
    def lock_file(self) -> Path:
        return self.dir.with_name(f"{self.prefix}.lock")

    @property
    def failed_up_log(self) -> Path:
        """Where a failed fresh ``up`` keeps the playbook's log (it outlives the lab)."""
        return self.dir.with_name(FAILED_UP_LOG.format(prefix=self.prefix))

    # --- checks and making ----------------------------------------------------------------
    def check(self) -> bool:
        """True when the directory exists and may be trusted, False when it (or the root) does
        not exist; LabError when it, the root or a directory above is not root's alone."""
        if trusted_root(create=False) is None:
            return False
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(str(self.dir), "is a symlink")
        _check_trusted(str(self.dir), st)
        return True

    def prepare(self, *subdirs: str) -> Path:
        """Make (or check) the directory and ``subdirs`` (paths inside it), each 0700."""
        require_root("making a lab")
        trusted_root(create=True)
        _private_dir(self.dir)
        for sub in subdirs:
            path = self.dir
            for part in Path(sub).parts:
                path = path / part
                _private_dir(path)
        return self.dir

    def has_record(self) -> bool:
        """Did tcplab make this lab (is its ``lab.json`` there, a regular file)?"""
        try:
            return stat.S_ISREG(os.lstat(self.meta_file).st_mode)
        except OSError:
            return False

    # --- files ----------------------------------------------------------------------------
    def read_meta(self) -> dict:
        try:
            meta = json.loads(read_file(self.meta_file))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def write_meta(self, **updates) -> None:
        """Merge ``updates`` into ``lab.json``: a new file (O_EXCL, O_NOFOLLOW) renamed over
        the old one, so a reader never sees half a record and no link is followed."""
        meta = self.read_meta()
        meta.update(updates)
        tmp = self.meta_file.with_name(META + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, self.meta_file)

    def write(self, name: str, text: str | bytes, mode: int = 0o600) -> Path:
        path = self.dir / name
        write_file(path, text, mode)
        return path

    def open_log(self, name: str):
        """A new, empty text file ``name`` in the directory, opened for writing (a log)."""
        path = self.write(name, "")
        return open(path, "a", errors="replace", opener=_nofollow)

    def live_pid(self, name: str) -> int | None:
        """The PID in pid file ``name`` if that process is alive and has this lab's directory
        on its command line (sshd, qemu and libvirtd are all started with it there)."""
        try:
            pid = int(read_file(self.dir / name).split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 1 or not pid_alive(pid) or str(self.dir) + "/" not in cmdline(pid):
            return None
        return pid

    # --- lock and removal -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Serialise up/down/demo of one lab (two labs with different prefixes do not block).
        The lock file is opened without truncating it and without following a link."""
        require_root("this tcplab command")
        trusted_root(create=True)
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as e:
            raise LabError(f"cannot open the lock {self.lock_file} ({e.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LabError(f"the lock {self.lock_file} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabBusy(f"lab '{self.prefix}' is busy: another tcplab command is using "
                               f"it (wait for it, or use another --prefix)") from None
            try:
                yield
            finally:
                if not os.path.lexists(self.dir):   # the lab is gone (down, or a failed up)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.lock_file)
        finally:
            os.close(fd)

    def held(self) -> bool:
        """Whether some process holds the lab's lock now (it is not taken here)."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def remove(self) -> None:
        """Delete the directory (checked first; never through a symlink) and the lock file."""
        if self.check():
            try:
                shutil.rmtree(self.dir)
            except OSError as e:
                raise LabError(f"could not remove {self.dir}: {e}") from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.lexists(self.lock_file) and trusted_root() is not None:
                os.unlink(self.lock_file)           # unlink removes a link, never its target
