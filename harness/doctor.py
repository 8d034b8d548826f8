"""``invoke doctor``: check the lab piece by piece and explain every failure.

Each check says what it looked at, whether it is fine, and — when it is not — why that matters
for the exchange and how to fix it.  The last check is the lecture's "Scapy startup bug": Scapy
once crashed at start-up when ``vboxnet0`` was up, because it inspected every interface too
eagerly; the doctor starts Scapy on the host side with ``vboxnet0`` up and reports what it sees.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from harness.lab import LAB_PORT, Backend, net
from harness.lab.firewall import Firewall, over_ssh, rst_rule
from harness.run.ssh import LabSSH, check_login
from harness.util import LabError

TOOLS = ("ip", "iptables", "ethtool", "nc", "tshark", "dumpcap", "tcpdump", "ssh")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    why: str = ""     # why it matters / how to fix (shown when not ok)


def _host(backend: Backend, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(backend.host_exec_prefix() + list(cmd), capture_output=True,
                          text=True, timeout=timeout)


def diagnose(backend: Backend) -> list[Check]:
    """Run every check in order; later checks are skipped (and say so) when the lab is absent."""
    checks: list[Check] = []
    add = checks.append

    missing = [t for t in TOOLS if shutil.which(t) is None]
    add(Check("tools", not missing, "all present" if not missing else f"missing: {missing}",
              "install them with `sudo ./bootstrap`"))

    st = backend.status()
    add(Check("lab", bool(st.get("up")), f"backend {backend.name}, prefix {backend.prefix}",
              "the lab is not up: run `invoke up`"))
    if not st.get("up"):
        return checks

    ifc = st.get("interface") or ""
    add(Check("host interface", "UP" in ifc.split() and f"{backend.host_ip}/24" in ifc,
              ifc or "missing",
              f"{backend.capture_interface} must be UP with {backend.host_ip}/24: the capture "
              f"listens there and nc leaves from there; `invoke down && invoke up` rebuilds it"))

    tx = net.tx_checksumming(backend.host_ns, backend.capture_interface)
    add(Check("host offload", tx.startswith("off"), f"tx-checksumming: {tx}",
              "with TX checksum offload on, the kernel leaves checksums to the 'hardware', so "
              "captures show the host's packets with incorrect checksums; "
              f"fix: ethtool -K {backend.capture_interface} tx off"))

    login, detail = check_login(backend.ssh_endpoint())
    add(Check("ssh", login, detail, "the harness starts the responder over SSH; see "
              "`invoke status`"))
    if not login:
        return checks

    with LabSSH(backend.ssh_endpoint()) as ssh:
        dev = net.parse_dev_with_addr(ssh.run(shlex.join(net.dev_with_addr_argv(backend.vm_ip)),
                                              check=False).stdout)
        add(Check("vm interface", bool(dev), f"{backend.vm_ip} on {dev or 'nothing'}",
                  f"the VM must own {backend.vm_ip}: re-provision with `invoke up`"))
        if dev:
            tx = net.parse_tx_checksumming(ssh.run(shlex.join(net.tx_checksumming_argv(dev)),
                                                   check=False).stdout)
            add(Check("vm offload", tx.startswith("off"), f"{dev} tx-checksumming: {tx}",
                      "the responder computes its own checksums, but the VM kernel's packets "
                      f"would show wrong checksums in captures; fix: ethtool -K {dev} tx off"))
        there = Firewall(over_ssh(ssh)).check(rst_rule())
        add(Check("rst block", there, f"iptables -C {rst_rule()}: "
                  f"{'present' if there else 'missing'}",
                  "without it the VM kernel answers the client's SYN with a RST (it has no "
                  "socket on the port) faster than the responder's SYN+ACK, and nc is refused; "
                  "re-provision with `invoke up`"))
        rdir = backend.responder_dir()
        helpr = ssh.run(f"cd {rdir} && /usr/bin/python3 -m responder --help", check=False)
        add(Check("responder deployed", helpr.status == 0,
                  f"python3 -m responder --help in {rdir}: exit {helpr.status}",
                  "provisioning copies responder/ into the VM: run `invoke up`"))
        if helpr.status == 0:
            add(_handshake_check(backend, ssh))
    add(_scapy_check(backend))
    return checks


def _handshake_check(backend: Backend, ssh: LabSSH) -> Check:
    """Start the responder and let nc complete a handshake with it (nc -z: connect, close)."""
    from harness.run.responder import start_responder
    try:
        proc = start_responder(ssh, backend, ["--app", "hello"])
    except LabError as e:
        return Check("handshake", False, str(e), "the responder did not start")
    try:
        t0 = time.monotonic()
        res = _host(backend, "nc", "-z", "-w", "3", backend.vm_ip, str(LAB_PORT))
        ms = (time.monotonic() - t0) * 1000
        return Check("handshake", res.returncode == 0,
                     f"nc -z {backend.vm_ip} {LAB_PORT}: exit {res.returncode} ({ms:.0f} ms) "
                     f"{res.stderr.strip()}",
                     "the responder runs but no handshake completes: is the RST block there, is "
                     "the responder marking its packets (--mark), is the capture interface up?")
    finally:
        proc.stop()


def _scapy_check(backend: Backend) -> Check:
    """The lecture's pitfall: Scapy crashing at start-up because of an up vboxnet0."""
    code = ("import scapy.all as s; "
            f"i = s.conf.ifaces.dev_from_name({backend.capture_interface!r}); "
            "print(i.name, i.ip, s.conf.iface)")
    try:
        res = _host(backend, sys.executable, "-c", code, timeout=60)
    except subprocess.TimeoutExpired:
        return Check("scapy", False, "Scapy did not start within 60 s", "")
    ok = res.returncode == 0
    detail = res.stdout.strip() if ok else (res.stderr.strip().splitlines() or ["?"])[-1]
    return Check("scapy", ok, f"Scapy starts with {backend.capture_interface} up: {detail}",
                 "the lecture's 'Scapy startup bug': Scapy's start-up scan of interfaces fails "
                 f"on {backend.capture_interface}; bring it down while Scapy starts "
                 f"(`ip link set {backend.capture_interface} down`), then up again")


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{'ok ' if c.ok else 'BAD'}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.why:
            lines.append(f"     {'':<{width}}  -> {c.why}")
    return "\n".join(lines)
