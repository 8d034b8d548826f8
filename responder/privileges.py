"""Giving up privilege once the raw sockets are open (the I/O layer calls :func:`drop_privileges`).

An open raw socket keeps working whoever owns the process, so after opening its sockets (and
setting SO_MARK, and reading ``--http-file``) the responder needs no privilege at all.  Run as
root (the lab starts it over SSH as root) it

1. clears its supplementary groups (``setgroups([])``),
2. switches its real, effective and saved gid, then uid, to an unprivileged user (``--user``,
   default ``nobody``; never uid 0): the kernel then clears every capability, permitted,
   effective and ambient, because no uid is 0 any more (capabilities(7));
3. sets the remaining capability sets to empty (``capset``) and ``no_new_privs`` (so no
   ``execve`` can ever give any back: set-uid bits and file capabilities are ignored);
4. checks the result (uids, gids, groups, ``capget``, ``PR_GET_NO_NEW_PRIVS``).

Run as a non-root user with only CAP_NET_RAW (e.g. ``setpriv``/``setcap``), it is already
unprivileged: it drops that capability and sets ``no_new_privs``, and says so.

Any step that fails raises :class:`PrivilegeError`: the responder then refuses to go on (exit 2,
one line on stderr), rather than serve untrusted input as root.  Standard library only
(``os``, ``pwd``, ``ctypes`` for ``capset``/``capget``/``prctl``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import struct

from .contract import DEFAULT_USER

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_CAP_VERSION_3 = 0x20080522         # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
_CAP_HEADER = struct.Struct("Ii")   # version, pid (0: this process)
_CAP_DATA = struct.Struct("6I")     # {effective, permitted, inheritable} x 2


class PrivilegeError(Exception):
    """A step of the drop failed; the message names it."""


def resolve_user(name: str) -> tuple:
    """``(uid, gid)`` for a user name (or a numeric uid); never root."""
    try:
        pw = pwd.getpwnam(name)
        uid, gid = pw.pw_uid, pw.pw_gid
    except KeyError:
        if not name.isdigit():
            raise PrivilegeError(f"no user {name!r} on this system (choose one with --user)")
        uid = int(name)
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    if uid == 0 or gid == 0:
        raise PrivilegeError(f"--user {name}: the responder must not keep uid or gid 0")
    return uid, gid


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError as e:
        raise PrivilegeError(f"cannot load libc for capset/prctl: {e}") from None


def _capset_empty(libc) -> None:
    header = ctypes.create_string_buffer(_CAP_HEADER.pack(_CAP_VERSION_3, 0))
    data = ctypes.create_string_buffer(_CAP_DATA.size)
    if libc.capset(header, data) != 0:
        raise PrivilegeError(f"capset: {os.strerror(ctypes.get_errno())}")


def capabilities(libc=None) -> tuple:
    """``(effective, permitted, inheritable)`` of this process, as 64-bit masks (capget)."""
    libc = libc or _libc()
    header = ctypes.create_string_buffer(_CAP_HEADER.pack(_CAP_VERSION_3, 0))
    data = ctypes.create_string_buffer(_CAP_DATA.size)
    if libc.capget(header, data) != 0:
        raise PrivilegeError(f"capget: {os.strerror(ctypes.get_errno())}")
    e0, p0, i0, e1, p1, i1 = _CAP_DATA.unpack(data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def drop_privileges(user: str = DEFAULT_USER) -> str:
    """Become unprivileged for good (see the module docstring); returns the line to log."""
    libc = _libc()
    was_root = 0 in os.getresuid()
    if was_root:
        uid, gid = resolve_user(user)
        for step, call in (("setgroups([])", lambda: os.setgroups([])),
                           (f"setresgid({gid})", lambda: os.setresgid(gid, gid, gid)),
                           (f"setresuid({uid})", lambda: os.setresuid(uid, uid, uid))):
            try:
                call()
            except OSError as e:
                raise PrivilegeError(f"{step}: {e.strerror} (the responder needs "
                                     f"CAP_SETUID and CAP_SETGID to leave root)") from None
    _capset_empty(libc)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    # Check, rather than trust, every step.
    uids, gids = os.getresuid(), os.getresgid()
    if 0 in uids or 0 in gids:
        raise PrivilegeError(f"still uid/gid 0 after the switch: uids {uids}, gids {gids}")
    if was_root and (uids != (uid,) * 3 or gids != (gid,) * 3 or os.getgroups()):
        raise PrivilegeError(f"switch incomplete: uids {uids}, gids {gids}, "
                             f"groups {os.getgroups()}")
    if any(capabilities(libc)):
        raise PrivilegeError(f"capabilities left after capset: {capabilities(libc)}")
    if libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise PrivilegeError("no_new_privs is not set")
    if was_root:
        return (f"privileges dropped: uid {uid} gid {gid} ({user}), no groups, "
                f"no capabilities, no_new_privs")
    return (f"already unprivileged (uid {uids[0]} gid {gids[0]}): capabilities dropped, "
            f"no_new_privs")
