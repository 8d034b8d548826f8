"""Namespaces, links and addresses: the one module that runs ``ip`` and ``ethtool``.

Every function takes the network namespace to act in by name (``ns``); ``None`` means the
namespace this process runs in (the VirtualBox provider's host side, which is this machine).
Backends, the doctor and the bench call these instead of building ``ip`` command lines, so the
syntax (and its quirks: ``ip netns list`` prints ``NAME (id: N)``, a namespace cannot be deleted
while a process still holds it for a moment) is written down once.

:class:`Namespace` is one named namespace a lab owns: made, entered (its exec prefix and the SSH
``ProxyCommand`` through it), listed (its processes) and deleted.  Whether a namespace *is* the
lab's (tcplab made it) is decided by the lab's record (:mod:`harness.lab.state`), never by its
name alone: names are global and anyone may pick them.

Commands that run inside the lab VM over SSH use the argv builders and parsers here too
(:func:`tx_checksumming_argv`, :func:`parse_tx_checksumming`), so the host and the VM are read
the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from harness.util import LabError, run


def _ip(ns: str | None) -> list[str]:
    return ["ip"] if ns is None else ["ip", "-n", ns]


def exec_prefix(ns: str | None) -> list[str]:
    """argv prefix that runs a command inside namespace ``ns`` (``[]``: right here)."""
    return [] if ns is None else ["ip", "netns", "exec", ns]


# --- namespaces -------------------------------------------------------------------------------

def namespaces() -> set[str]:
    """Names of every named network namespace on this machine (``ip netns list``)."""
    out = run(["ip", "netns", "list"], what="ip netns list").stdout.decode()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def ns_add(name: str) -> None:
    run(["ip", "netns", "add", name], what=f"ip netns add {name}")


def ns_del(name: str, tries: int = 20) -> None:
    """Delete namespace ``name``; retries for a moment (a process that was just killed can
    still hold it), then a LabError that says how to see what holds it."""
    for _ in range(tries):
        if run(["ip", "netns", "del", name], check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise LabError(f"could not delete namespace {name}: `ip netns pids {name}` lists what "
                   f"holds it")


def ns_pids(*names: str) -> set[int]:
    """PIDs of the processes inside the given namespaces (absent namespaces: none)."""
    pids: set[int] = set()
    for name in names:
        out = run(["ip", "netns", "pids", name], check=False).stdout.decode().split()
        pids |= {int(p) for p in out if p.isdigit()}
    return pids


@dataclass(frozen=True)
class Namespace:
    """One network namespace of a lab, by name (``<prefix>-host``, ``<prefix>-vm``)."""

    name: str

    def exists(self) -> bool:
        return self.name in namespaces()

    def make(self) -> None:
        """Create it unless it exists, with its loopback up (idempotent)."""
        if not self.exists():
            ns_add(self.name)
        link_up(self.name, "lo")

    def delete(self) -> None:
        ns_del(self.name)

    def pids(self) -> set[int]:
        return ns_pids(self.name)

    def exec_prefix(self) -> list[str]:
        return exec_prefix(self.name)

    def proxy_command(self) -> str:
        """An SSH ``ProxyCommand`` that reaches ``%h:%p`` from inside this namespace."""
        return f"ip netns exec {self.name} nc %h %p"


# --- links and addresses ----------------------------------------------------------------------

def link_exists(ns: str | None, dev: str) -> bool:
    return run(_ip(ns) + ["link", "show", dev], check=False).returncode == 0


def link_up(ns: str | None, dev: str) -> None:
    run(_ip(ns) + ["link", "set", dev, "up"], what=f"ip link set {dev} up")


def veth(ns: str, dev: str, peer: str, peer_ns: str) -> None:
    """A veth pair made inside ``ns`` with its peer placed straight into ``peer_ns`` (it never
    appears in the namespace this process runs in)."""
    run(_ip(ns) + ["link", "add", dev, "type", "veth", "peer", "name", peer, "netns", peer_ns],
        what=f"ip link add {dev} type veth")


def tap(ns: str, dev: str) -> None:
    run(_ip(ns) + ["tuntap", "add", "dev", dev, "mode", "tap"], what=f"ip tuntap add {dev}")


def addr_replace(ns: str | None, dev: str, cidr: str) -> None:
    run(_ip(ns) + ["addr", "replace", cidr, "dev", dev], what=f"ip addr {cidr} on {dev}")


def addr_brief(ns: str | None, dev: str) -> str | None:
    """``ip -br addr show DEV``: e.g. ``vboxnet0 UP 192.168.56.1/24``; None when absent."""
    res = run(_ip(ns) + ["-br", "addr", "show", dev], check=False)
    if res.returncode != 0:
        return None
    return res.stdout.decode().strip() or None


def route_dev(ns: str | None, ip: str) -> str | None:
    """The interface the route to ``ip`` leaves by (``ip route get``), or None."""
    res = run(_ip(ns) + ["-o", "route", "get", ip], check=False)
    m = re.search(r"\bdev\s+(\S+)", res.stdout.decode())
    return m.group(1) if res.returncode == 0 and m else None


def dev_with_addr_argv(ip: str) -> list[str]:
    """argv that prints ``INDEX: DEV inet ...`` for the interface holding ``ip``."""
    return ["ip", "-o", "-4", "addr", "show", "to", ip]


def parse_dev_with_addr(text: str) -> str | None:
    m = re.match(r"\s*\d+:\s+(\S+)", text)
    return m.group(1) if m else None


# --- offloads ---------------------------------------------------------------------------------

def tx_offload_off(ns: str | None, dev: str, *, check: bool = True) -> None:
    """TX checksum offload off on ``dev``: without it the kernel leaves its packets' checksums
    to the "hardware", and a capture on a veth or tap shows them as incorrect."""
    run(exec_prefix(ns) + ["ethtool", "-K", dev, "tx", "off"], check=check,
        what=f"ethtool -K {dev} tx off")


def tx_checksumming_argv(dev: str) -> list[str]:
    return ["ethtool", "-k", dev]


def parse_tx_checksumming(text: str) -> str:
    """The value of ``tx-checksumming:`` in ``ethtool -k`` output (``off``, ``on [fixed]``...)."""
    for line in text.splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def tx_checksumming(ns: str | None, dev: str) -> str:
    res = run(exec_prefix(ns) + tx_checksumming_argv(dev), check=False)
    return parse_tx_checksumming(res.stdout.decode(errors="replace"))
