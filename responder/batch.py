"""Many packets per system call: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ``ctypes``.

The standard library's sockets make one system call per packet (``recv_into``, ``sendto``).
Linux can move a batch per call; Python has no binding for it, so this module calls libc's
``recvmmsg``/``sendmmsg`` through :mod:`ctypes` on the raw socket's file descriptor, with all
the C structures in one anonymous ``mmap`` laid out once at start-up:

* receive: ``SLOTS`` slots of 64 KiB (a raw socket can be handed a GRO/GSO packet larger than
  the MTU; an untouched page of the mapping costs no memory), each with its ``iovec`` and
  ``mmsghdr`` pointing at it; one ``recvmmsg(MSG_DONTWAIT)`` fills up to ``SLOTS`` of them
  and says each one's length;
* send: ``SLOTS`` slots of 64 KiB with their ``sockaddr_in``, ``iovec`` and ``mmsghdr``;
  :meth:`Batch.sendto` copies the segment and its destination into the next slot (the caller
  keeps nothing alive), :meth:`Batch.flush` sends every queued slot with one ``sendmmsg``, in
  order, and reports each failed message's error like ``sendto`` would raise it.

:func:`open_batch` returns None where ctypes, libc or the calls are missing (another libc,
another OS, a Python without ctypes): the I/O layer then keeps its plain ``recv_into`` /
``sendto`` path.  The layout comes from ``ctypes.Structure`` definitions, so it follows the
platform's C ABI rather than hard-coded offsets.  Set up before the responder drops its
privileges (nothing here needs any).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct

try:
    import ctypes
except ImportError:             # a Python built without ctypes: the plain path
    ctypes = None

SLOTS = 64
SLOT_SIZE = 65536
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)


def _layouts():
    class Iovec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                    ("msg_flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]
    return Iovec, Msghdr, Mmsghdr


class _Area:
    """``n`` message slots in one mapping: data (SLOT_SIZE each), sockaddr_in (16 each),
    iovec, mmsghdr; every pointer written once."""

    def __init__(self, n: int, with_names: bool):
        Iovec, _Msghdr, Mmsghdr = _layouts()
        self.n = n
        self.hdr_size = ctypes.sizeof(Mmsghdr)
        self.len_off = Mmsghdr.msg_len.offset
        self.iov_len_off = Iovec.iov_len.offset
        self.iov_size = ctypes.sizeof(Iovec)
        self.data_off = 0
        self.name_off = n * SLOT_SIZE
        self.iov_off = self.name_off + n * 16
        self.hdr_off = self.iov_off + n * self.iov_size
        size = self.hdr_off + n * self.hdr_size
        self.mm = mmap.mmap(-1, size)
        self.view = memoryview(self.mm)
        self._anchor = ctypes.c_char.from_buffer(self.mm)      # keeps the address valid
        self.base = ctypes.addressof(self._anchor)
        self.hdrs = self.base + self.hdr_off
        for i in range(n):
            iov = Iovec.from_buffer(self.mm, self.iov_off + i * self.iov_size)
            iov.iov_base = self.base + i * SLOT_SIZE
            iov.iov_len = SLOT_SIZE
            h = Mmsghdr.from_buffer(self.mm, self.hdr_off + i * self.hdr_size)
            h.msg_hdr.msg_iov = self.base + self.iov_off + i * self.iov_size
            h.msg_hdr.msg_iovlen = 1
            if with_names:
                h.msg_hdr.msg_name = self.base + self.name_off + i * 16
                h.msg_hdr.msg_namelen = 16
            del iov, h          # no exported buffer may outlive the set-up


class Batch:
    """``recvmmsg``/``sendmmsg`` on one socket (see the module docstring)."""

    def __init__(self, rx: socket.socket, tx: socket.socket, libc, slots: int = SLOTS):
        self.sockets = (rx, tx)         # kept open as long as the batch uses their fds
        self.rx_fd = rx.fileno()
        self.tx_fd = tx.fileno()
        self.rx = _Area(slots, with_names=False)
        self.tx = _Area(slots, with_names=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p]
        self._recvmmsg.restype = ctypes.c_int
        self._sendmmsg = libc.sendmmsg
        self._sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self._sendmmsg.restype = ctypes.c_int
        self.queued = 0
        self._names: dict = {}          # destination (4 bytes) -> its sockaddr_in
        self.calls = {"recvmmsg": 0, "sendmmsg": 0}

    # --- receive ----------------------------------------------------------------------
    def recv(self) -> list:
        """Up to ``slots`` packets waiting on the socket, as ``[(view, length)]``; [] if none
        (EAGAIN); OSError for any other error.  Each view is into the receive slots: valid
        until the next call (handle it, or copy it, before then)."""
        rx = self.rx
        k = self._recvmmsg(self.rx_fd, rx.hdrs, rx.n, MSG_DONTWAIT, None)
        self.calls["recvmmsg"] += 1
        if k < 0:
            e = ctypes.get_errno()
            if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(e, os.strerror(e))
        view, unpack, off, size, lo = rx.view, struct.unpack_from, rx.hdr_off, rx.hdr_size, \
            rx.len_off
        out = []
        for i in range(k):
            n = unpack("I", view, off + i * size + lo)[0]
            start = i * SLOT_SIZE
            out.append((view[start:start + n], n))
        return out

    # --- send -------------------------------------------------------------------------
    def sendto(self, data, addr) -> int:
        """Queue ``data`` for ``addr`` (``(ip, port)`` as for ``socket.sendto``); sent by the
        next :meth:`flush` (or now, if the batch is full)."""
        tx = self.tx
        if self.queued == tx.n:
            self.flush()
        i = self.queued
        n = len(data)
        if n > SLOT_SIZE:
            raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
        start = i * SLOT_SIZE
        tx.view[start:start + n] = data
        name = self._names.get(addr)
        if name is None:
            if len(self._names) >= 4096:
                self._names.clear()
            name = self._names[addr] = struct.pack("=H", socket.AF_INET) + \
                struct.pack("!H", addr[1]) + socket.inet_aton(addr[0]) + bytes(8)
        noff = tx.name_off + i * 16
        tx.view[noff:noff + 16] = name
        struct.pack_into("N", tx.view, tx.iov_off + i * tx.iov_size + tx.iov_len_off, n)
        self.queued = i + 1
        return n

    def flush(self, on_error=None) -> int:
        """Send everything queued, in order; returns how many were sent.  A message the kernel
        refuses (EPERM from a firewall, ENOBUFS, ...) is passed to ``on_error(OSError)`` (or
        raised after the rest is sent) and skipped, as a failed ``sendto`` would be."""
        tx, total, i, failed = self.tx, self.queued, 0, None
        sent = 0
        while i < total:
            k = self._sendmmsg(self.tx_fd, tx.hdrs + i * tx.hdr_size, total - i, 0)
            self.calls["sendmmsg"] += 1
            if k < 0:
                e = ctypes.get_errno()
                if e == errno.EINTR:
                    continue
                err = OSError(e, os.strerror(e))
                if on_error is None:
                    failed = failed or err
                else:
                    on_error(err)
                i += 1                  # the message at i failed: skip it, send the rest
                continue
            sent += k
            i += k
        self.queued = 0
        if failed is not None:
            raise failed
        return sent


def open_batch(rx: socket.socket, tx: socket.socket, slots: int = SLOTS):
    """A :class:`Batch` receiving on ``rx`` and sending on ``tx`` (they may be one socket), or
    None where ``recvmmsg``/``sendmmsg`` cannot be had through ctypes here."""
    if ctypes is None or not hasattr(socket, "AF_INET"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.recvmmsg, libc.sendmmsg        # AttributeError if this libc lacks them
        return Batch(rx, tx, libc, slots)
    except (OSError, AttributeError, ValueError, TypeError):
        return None
