"""End-to-end: VirtualBox's shape, run here for real.

On VirtualBox the lab has no host namespace: the harness's own machine is the host side, so
the client, the capture, the Scapy peer and its iptables rule all run right there, and the
capture interface is found by route.  That code runs here on the qemu backend with its host
side "here" (TCPLAB_QEMU_HOST_SIDE=here: qemu's tap in the harness's own network namespace,
``host_exec_prefix() == []``, no ProxyCommand), driven by a harness that itself runs inside a
network namespace this test makes: that namespace plays the laptop.  Every lesson passes
through ``invoke lessons`` (the Scapy ones with their host rule; nagle-linux skipped by its
``backends:``); a run killed with SIGKILL leaves its tagged host rule, which ``status`` lists
and ``down`` removes.  Nothing touches this machine's root namespace (compared before/after).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, new_prefix, root_ns_state

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]

SCAPY_LESSONS = ("challenge-ack", "close-states-simultaneous", "nagle-responder",
                 "nagle-responder-nodelay")


def in_laptop(ns: str, *args: str) -> list[str]:
    """argv that runs ``invoke ARGS`` inside namespace ``ns`` with the qemu host side here."""
    return ["ip", "netns", "exec", ns, "env", "TCPLAB_QEMU_HOST_SIDE=here", sys.executable,
            "-m", "invoke", *args]


def invoke(ns: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(in_laptop(ns, *args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rules(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables", "-S", "OUTPUT"],
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def laptop():
    """A namespace standing in for a VirtualBox user's laptop, and a lab's prefix; the lab is
    brought down and the namespace deleted afterwards, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, tap)")
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "iptables") if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages/apt-vm.txt)")
    before = root_ns_state()
    ns, prefix = new_prefix("vbh"), new_prefix("vbx")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    try:
        yield {"ns": ns, "prefix": prefix, "before": before}
    finally:
        invoke(ns, "down", "--prefix", prefix, timeout=120)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert root_ns_state() == before, "the VirtualBox-shaped run changed the root namespace"


def test_every_lesson_passes_with_the_host_side_here(laptop):
    ns, prefix = laptop["ns"], laptop["prefix"]
    r = invoke(ns, "lessons", "--backend", "qemu", "--prefix", prefix, timeout=1500)
    table = r.stdout
    assert r.returncode == 0, f"invoke lessons exited {r.returncode}:\n{table}\n{r.stderr[-3000:]}"
    lines = {l.split()[0]: l for l in table.splitlines() if l.strip() and " " in l}
    for name in SCAPY_LESSONS:
        assert " ✓ " in lines[name], lines.get(name)
    assert " skipped " in lines["nagle-linux"] and "for netns only" in lines["nagle-linux"]
    assert re.search(r"^\d+ passed, 0 failed, 0 errors, 1 skipped on qemu$", table, re.M), table
    st = json.loads(invoke(ns, "status", "--prefix", prefix, "--json").stdout)
    assert st["up"] and st["host_side"] == "here" and st["namespaces"] == {}, st
    # The capture interface was found by route, and carries the host's address.
    assert st["interface"].split()[0] == f"{prefix}-tap" and "192.168.56.1/24" in st["interface"]
    assert st["host_rules"] == [] and "tcplab-host" not in rules(ns)
    assert root_ns_state() == laptop["before"]


def test_a_killed_run_leaves_its_tagged_rule_status_lists_it_down_removes_it(laptop):
    ns, prefix = laptop["ns"], laptop["prefix"]
    proc = subprocess.Popen(in_laptop(ns, "demo", "--backend", "qemu", "--prefix", prefix,
                                      "--scenario", "challenge-ack"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while f"tcplab-host:{prefix}" not in rules(ns):
            assert proc.poll() is None, "the demo ended before its Scapy peer's rule was seen"
            assert time.monotonic() < deadline, "no Scapy peer rule within 300 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = [l for l in rules(ns).splitlines() if f"tcplab-host:{prefix}" in l]
    assert len(left) == 1, left
    # Scoped: the lab's tap, its two addresses, the peer's port, the lab port.
    assert all(w in left[0] for w in (f"-o {prefix}-tap", "-s 192.168.56.1/32",
                                      "-d 192.168.56.100/32", "--dport 80", "--sport "))
    st = json.loads(invoke(ns, "status", "--prefix", prefix, "--json").stdout)
    assert len(st["host_rules"]) == 1 and "--sport" in st["host_rules"][0], st
    r = invoke(ns, "down", "--prefix", prefix, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "removed the host rule" in r.stderr
    assert "tcplab-host" not in rules(ns)
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                           text=True).stdout
    assert f"{prefix}-tap" not in links, links          # qemu's tap went with qemu
    assert root_ns_state() == laptop["before"]
