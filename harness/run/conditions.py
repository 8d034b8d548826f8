"""Lab conditions: what the network does to the packets during one run.

They are applied inside the lab VM over SSH (so they work on every backend), added before the
client starts and removed afterwards, also when the run fails.

* ``drop c>s [ack N] first K`` -- iptables in the VM's INPUT chain drops the first K client
  packets (that ACK relative sequence number N of the responder).  They are lost *after* the
  host-side capture saw them: the transcript shows them, the responder never does.
* ``drop c>s ack-only first K`` -- the first K client segments whose only flag is ACK (no
  SYN, FIN, RST or PSH: pure ACKs), whatever their numbers: for a responder whose ISN is not
  known (a student's), e.g. the ACK that completes the handshake.
* ``drop s>c [seq N] first K`` -- the VM's OUTPUT chain drops the first K responder packets
  (starting at relative sequence number N); they never reach the wire nor the capture.
* ``delay 100ms``, ``loss 10%`` -- need ``tc netem``; a kernel without ``sch_netem`` (like the
  one this project is developed on) makes the run fail at once with a clear error.

The iptables rules themselves (and how "first K" and relative numbers become rules) are
:mod:`harness.lab.firewall`'s; this module decides when they are in force, and runs ``tc``.
"""

from __future__ import annotations

import contextlib
import shlex

from harness.judge.scenario import Condition, Scenario
from harness.lab import LAB_PORT
from harness.lab.firewall import Firewall, drop_rules, over_ssh
from harness.util import LabError


class Conditions:
    """``with Conditions(ssh, scn, client_ip): ...`` -- the scenario's conditions, in force."""

    def __init__(self, ssh, scn: Scenario, client_ip: str, port: int = LAB_PORT):
        self.ssh, self.scn, self.client_ip, self.port = ssh, scn, client_ip, port
        self.qdisc_dev: str | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self):
        drops = [rule for cond in self.scn.condition_list if cond.kind == "drop"
                 for rule in drop_rules(cond, self.scn.isn, self.client_ip, self.port)]
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(Firewall(over_ssh(self.ssh)).applied(drops))
            for cond in self.scn.condition_list:
                if cond.kind != "drop":
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
        if self.qdisc_dev:
            self.ssh.run(f"tc qdisc del dev {shlex.quote(self.qdisc_dev)} root", check=False)
            self.qdisc_dev = None
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()
