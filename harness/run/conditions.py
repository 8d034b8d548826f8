"""Lab conditions: what the network does to the packets during one run.

They are applied inside the lab VM over SSH (so they work on every backend), added before the
client starts and removed afterwards, also when the run fails.

* ``drop c>s [ack N] first K`` -- iptables in the VM's INPUT chain drops the first K client
  packets (that ACK relative sequence number N of the responder).  They are lost *after* the
  host-side capture saw them: the transcript shows them, the responder never does.
* ``drop s>c [seq N] first K`` -- the VM's OUTPUT chain drops the first K responder packets
  (starting at relative sequence number N); they never reach the wire nor the capture.
* ``delay 100ms``, ``loss 10%`` -- need ``tc netem``; a kernel without ``sch_netem`` (like the
  one this project is developed on) makes the run fail at once with a clear error.

"First K": K rules ``-m statistic --mode nth --every 1000000 --packet 0``; each drops exactly
the first packet that reaches it, so K of them drop the first K and let every later one pass.
Relative numbers become absolute through the responder's fixed ISN (``--isn N``; the classic
responder's 0xaaaabbbb), matched with ``-m u32`` on the TCP header.
"""

from __future__ import annotations

import shlex

from harness.lab import LAB_PORT
from harness.judge.scenario import Condition, Scenario
from harness.util import LabError

COMMENT = "tcplab-condition"


def iptables_rules(cond: Condition, scn: Scenario, client_ip: str,
                   port: int = LAB_PORT) -> list[list[str]]:
    """The iptables rule specs (``-A CHAIN ...`` without the command) for one drop condition."""
    if cond.direction == "c>s":
        spec = ["INPUT", "-p", "tcp", "-s", client_ip, "--dport", str(port)]
        offset = 8                                    # the TCP ack field
    else:
        spec = ["OUTPUT", "-p", "tcp", "-d", client_ip, "--sport", str(port)]
        offset = 4                                    # the TCP seq field
    if cond.field:
        isn = scn.isn
        if isn is None:
            raise LabError(f"condition {cond.text!r} needs a fixed ISN (--isn N)")
        absolute = (isn + cond.value) & 0xFFFFFFFF
        spec += ["-m", "u32", "--u32", f"0>>22&0x3C@{offset}={absolute:#x}"]
    spec += ["-m", "statistic", "--mode", "nth", "--every", "1000000", "--packet", "0",
             "-m", "comment", "--comment", COMMENT, "-j", "DROP"]
    return [spec] * cond.count


class Conditions:
    """``with Conditions(ssh, scn, client_ip): ...`` -- the scenario's conditions, in force."""

    def __init__(self, ssh, scn: Scenario, client_ip: str, port: int = LAB_PORT):
        self.ssh, self.scn, self.client_ip, self.port = ssh, scn, client_ip, port
        self.added: list[list[str]] = []
        self.qdisc_dev: str | None = None

    def __enter__(self):
        try:
            for cond in self.scn.condition_list:
                if cond.kind == "drop":
                    for spec in iptables_rules(cond, self.scn, self.client_ip, self.port):
                        self.ssh.run(shlex.join(["iptables", "-A", *spec]))
                        self.added.append(spec)
                else:
                    self._netem(cond)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _netem(self, cond: Condition) -> None:
        if self.qdisc_dev is not None:
            raise LabError("only one netem condition (delay or loss) per scenario")
        route = self.ssh.run(f"ip -o route get {shlex.quote(self.client_ip)}").stdout.split()
        dev = route[route.index("dev") + 1] if "dev" in route else "eth1"
        what = "delay" if cond.kind == "delay" else "loss"
        res = self.ssh.run(shlex.join(["tc", "qdisc", "add", "dev", dev, "root", "netem", what,
                                       cond.amount]), check=False)
        if res.status != 0:
            raise LabError(f"condition {cond.text!r} needs tc netem, which the lab VM's kernel "
                           f"does not offer (tc: {res.stderr.strip() or res.status}); use an "
                           f"iptables 'drop' condition, or a kernel with sch_netem")
        self.qdisc_dev = dev

    def __exit__(self, *exc):
        for spec in reversed(self.added):
            self.ssh.run(shlex.join(["iptables", "-D", *spec]), check=False)
        self.added.clear()
        if self.qdisc_dev:
            self.ssh.run(f"tc qdisc del dev {shlex.quote(self.qdisc_dev)} root", check=False)
            self.qdisc_dev = None
