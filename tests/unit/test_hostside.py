"""harness.lab.hostside: the capture interface of a host side that is this machine, found by
route and checked to carry 192.168.56.1 -- on a fake host made in a namespace of the test's
own: a default route by eth0 and VirtualBox's vboxnet0 present without its address (the
route to the VM then falls back to eth0), then with it.  No packet is sent."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from harness.lab import hostside
from harness.util import LabError

VM, HOST = "192.168.56.100", "192.168.56.1"


@pytest.fixture
def fake_host():
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    ns = f"hs{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)

    def ip(*args):
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)
    try:
        ip("link", "set", "lo", "up")
        yield ns, ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_no_route_at_all_says_how_to_make_the_host_only_network(fake_host):
    ns, _ = fake_host
    with pytest.raises(LabError, match="no host interface reaches 192.168.56.100") as e:
        hostside.capture_interface(VM, HOST, ns)
    assert "VBoxManage hostonlyif ipconfig vboxnet0 --ip 192.168.56.1" in str(e.value)


def test_the_default_route_device_is_refused_then_vboxnet0_with_its_address_is_taken(fake_host):
    ns, ip = fake_host
    for dev, peer in (("eth0", "eth0p"), ("vboxnet0", "vbp")):
        ip("link", "add", dev, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "up")
        ip("link", "set", dev, "up")
    ip("addr", "add", "10.0.2.15/24", "dev", "eth0")
    ip("route", "add", "default", "via", "10.0.2.2", "dev", "eth0")
    # vboxnet0 exists and is up, but has no address: the route to the VM is the default one.
    with pytest.raises(LabError) as e:
        hostside.capture_interface(VM, HOST, ns)
    msg = str(e.value)
    assert "leaves by eth0, which does not carry 192.168.56.1" in msg, msg
    assert "VBoxManage hostonlyif ipconfig vboxnet0 --ip 192.168.56.1 --netmask " \
           "255.255.255.0" in msg
    assert "Host-only Networks" in msg
    # An address of another host-only network on vboxnet0 is not the lab's either.
    ip("addr", "add", "192.168.56.7/24", "dev", "vboxnet0")
    with pytest.raises(LabError, match="leaves by vboxnet0, which does not carry 192.168.56.1"):
        hostside.capture_interface(VM, HOST, ns)
    ip("addr", "flush", "dev", "vboxnet0")
    ip("addr", "add", "192.168.56.1/24", "dev", "vboxnet0")
    assert hostside.capture_interface(VM, HOST, ns) == "vboxnet0"
    assert hostside.carries(ns, "vboxnet0", HOST) and not hostside.carries(ns, "eth0", HOST)
