"""A lab's host side when it is this machine itself (VirtualBox; the qemu backend's
``host_side="here"``): which interface the capture listens on, and the check that it is the
lab's.

There is no namespace to name the interface for us, so it is found the way the traffic goes:
the interface the route to the VM leaves by (``ip route get 192.168.56.100``, or ``route -n
get`` on macOS, where VirtualBox 7's host-only *networks* get names such as ``bridge100``).
That lookup alone can be wrong: VirtualBox's host-only interface may exist without its
address (a fresh install, a host-only network edited in the GUI, ``vboxnet0`` made but never
configured), and the route then falls back to the default route's device (``eth0``,
``wlan0``): a capture there would see none of the lab's packets, and the lab's addresses would
leave by the wrong wire.  So the interface found must carry the host's address 192.168.56.1,
or ``up`` stops with how to give it one.
"""

from __future__ import annotations

import platform
import re

from harness.lab import net
from harness.util import LabError, run


def _fix(host_ip: str) -> str:
    return (f"give VirtualBox's host-only interface the address {host_ip}: "
            f"`VBoxManage hostonlyif ipconfig vboxnet0 --ip {host_ip} --netmask 255.255.255.0` "
            f"(VirtualBox 7 on macOS: `VBoxManage hostonlynet modify --name NAME "
            f"--lower-ip ...`), or in VirtualBox Manager: File > Tools > Network Manager > "
            f"Host-only Networks, IPv4 address {host_ip}, mask 255.255.255.0; then "
            f"`invoke up` again")


def _darwin_lookup(vm_ip: str) -> tuple[str | None, str]:
    out = run(["route", "-n", "get", vm_ip], check=False, what="route get").stdout.decode()
    m = re.search(r"interface:\s*(\S+)", out)
    return (m.group(1) if m else None), out.strip()


def _darwin_carries(dev: str, host_ip: str) -> bool:
    out = run(["ifconfig", dev], check=False, what="ifconfig").stdout.decode()
    return re.search(rf"\binet {re.escape(host_ip)}\b", out) is not None


def carries(ns: str | None, dev: str, host_ip: str) -> bool:
    """Does ``dev`` (in namespace ``ns``; None: here) have the IPv4 address ``host_ip``?"""
    brief = net.addr_brief(ns, dev) or ""
    return any(a.split("/")[0] == host_ip for a in brief.split()[2:])


def capture_interface(vm_ip: str, host_ip: str, ns: str | None = None) -> str:
    """The host-side interface that reaches ``vm_ip``, checked to carry ``host_ip``; LabError
    saying how to fix the host-only network otherwise.  ``ns``: look in that namespace
    instead of here (Linux)."""
    if platform.system() == "Darwin" and ns is None:
        dev, detail = _darwin_lookup(vm_ip)
        ok = dev is not None and _darwin_carries(dev, host_ip)
    else:
        dev, detail = net.route_dev(ns, vm_ip), ""
        ok = dev is not None and carries(ns, dev, host_ip)
    if dev is None:
        raise LabError(f"no host interface reaches {vm_ip}: is the VM's host-only network "
                       f"up? {detail} To make one: {_fix(host_ip)}".replace("  ", " "))
    if not ok:
        raise LabError(f"the route to the lab VM {vm_ip} leaves by {dev}, which does not carry "
                       f"{host_ip}: the host-only interface has no address (or is down), so "
                       f"the lab's traffic would go out by {dev} and the capture there would "
                       f"see none of it. To fix it, {_fix(host_ip)}")
    return dev
