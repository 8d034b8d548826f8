"""The responder's contract: the facts other programs rely on, written down once.

The harness (scenarios, grading, fuzzing, the bench) and the Ansible roles import or mirror
these names instead of copying them; ``responder.cli`` builds the command line from them.
Standard library only, no imports from the rest of the package at import time: this module is
safe and cheap to import anywhere (the host's venv, the lab VM's bare python3, PyPy).

``APPS`` (the ``--app`` names) is the one fact kept elsewhere: each app registers its name beside
its class and its ``--help`` text in :mod:`responder.apps`, so adding an app is one file.  Reading
``contract.APPS`` imports that registry (and with it the state machine, ~30 ms) on first use.
"""


#: ``--fault NAME``: deliberate, documented mistakes for testing the harness's checks
#: (``responder.faults``).
FAULTS = ("bad-checksum", "wrong-seq", "no-delayed-ack", "no-backoff", "no-challenge-ack",
          "tarpit-window", "no-time-wait")

#: The eleven states of RFC 9293 section 3.3.2, spelled as the RFC (and the transition log:
#: ``192.168.56.100:80 <> 192.168.56.1:62438 SYN-RECEIVED => ESTABLISHED``).
STATE_NAMES = ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
               "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")

#: ``--mark``: SO_MARK on everything the responder sends.  The lab's RST rule drops the VM
#: kernel's RSTs from the lab port unless they carry this mark.
DEFAULT_MARK = 0x5E

#: ``--user``: who the responder becomes once its raw sockets are open, when started as root
#: (``responder.privileges``).
DEFAULT_USER = "nobody"

#: The lecture's naive responder's initial sequence number (``--classic`` without ``--isn``).
CLASSIC_ISN = 0xAAAABBBB

#: The lab's addresses and port (the lecture's: the VM 192.168.56.100, port 80; the host
#: 192.168.56.1 on ``vboxnet0``).
VM_IP = "192.168.56.100"
HOST_IP = "192.168.56.1"
LAB_PORT = 80

#: The interpreters the responder runs on (``--runtime`` of ``invoke up``/``demo``/``bench``):
#: the VM's system CPython (3.9+) and Debian's ``pypy3`` (Python 3.9, a JIT: ~4x faster per
#: segment once warm).  The same standard-library sources run on both.
RUNTIMES = {"cpython": "/usr/bin/python3", "pypy": "/usr/bin/pypy3"}

#: The first line the responder prints on stderr once its sockets are open.
READY_LINE = "listening on "


def rst_rule(port: int = LAB_PORT, mark: int = DEFAULT_MARK) -> list:
    """The lecture's RST block as iptables arguments after ``-A``/``-C``/``-D``: drop the
    kernel's RSTs from ``port`` unless marked by the responder."""
    return ["OUTPUT", "-p", "tcp", "--sport", str(port), "--tcp-flags", "RST", "RST",
            "-m", "mark", "!", "--mark", hex(mark), "-j", "DROP"]


def quiet_rule(vm_ip: str = VM_IP, port: int = LAB_PORT) -> list:
    """An option beside the RST block, for load (``invoke bench``), never instead of it: table
    ``raw`` arguments after ``-A``/``-C``/``-D`` that drop the lab port's segments before the
    VM kernel's IP stack, so its TCP makes no RSTs at all.  Only a responder receiving on a
    packet socket (``--rx packet``) still sees them then."""
    return ["PREROUTING", "-d", vm_ip, "-p", "tcp", "--dport", str(port), "-j", "DROP"]


def __getattr__(name: str):
    """``APPS``: the ``--app`` names, from :data:`responder.apps.REGISTRY` (PEP 562)."""
    if name == "APPS":
        from .apps import REGISTRY
        return tuple(REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
