"""The one place that runs ``iptables`` on a lab: the rules tcplab uses, and one way to apply,
check and delete them.

Rules (as :class:`Rule` values, built here and nowhere else):

* :func:`rst_rule` -- the lecture's RST block in the VM (``responder.contract.rst_rule``: drop
  the VM kernel's RSTs from the lab port unless the responder marked them);
* :func:`drop_rules` -- a scenario's ``drop`` condition in the VM (the first K matching
  packets, in INPUT for c>s, OUTPUT for s>c; by relative number, or the client's pure ACKs);
* :func:`peer_rst_rule` -- the Scapy peer's RST block on the lab's host side (the host kernel
  knows nothing of the peer's connection and would reset it), scoped to the lab's interface,
  addresses and the peer's port, and tagged with the lab's name (:func:`host_tag`): on a
  backend whose host side is this machine itself (VirtualBox) a rule left by a killed run is
  found by its tag (:func:`tagged`) and removed by ``down`` (:func:`remove_tagged`);
* :func:`port_rst_rule` -- the bench's Scapy responder: every RST from its port;
* :func:`quiet_rule` -- the bench's "quiet kernel" (table ``raw``): the lab port's segments
  dropped before the VM kernel's IP stack, beside the RST block, never instead of it.

Where they are applied is a *runner*: a function ``argv -> (status, stderr)`` (``stdout=True``:
``(status, stdout)``, for listings).
:func:`over_ssh` runs in the lab VM through a :class:`harness.run.ssh.LabSSH`; :func:`local`
runs here, under an exec prefix (``ip netns exec NS``: a lab namespace).  :class:`Firewall`
adds, checks and deletes through either, and :meth:`Firewall.applied` removes what it added
also when the body fails.  The Ansible role ``tcplab_rst_block`` installs the same RST rule at
provisioning time (its variables mirror :func:`rst_rule`).
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from dataclasses import dataclass
from typing import Callable

from harness.util import LabError
from responder.contract import DEFAULT_MARK, LAB_PORT
from responder.contract import quiet_rule as _contract_quiet_rule
from responder.contract import rst_rule as _contract_rst_rule

#: ``-m comment`` on a scenario's drop rules, so that a rule left by a killed run is recognisable.
COMMENT = "tcplab-condition"
#: ``-m comment`` on a lab's rules on its host side: ``tcplab-host:<prefix>`` (see host_tag).
HOST_TAG = "tcplab-host:{prefix}"
#: SO_MARK of the Scapy peer's own packets (the responder's are DEFAULT_MARK, 0x5e).
PEER_MARK = 0x5F
#: Wait this long for the xtables lock (legacy iptables; iptables-nft ignores it).
LOCK_WAIT_S = "10"

#: ``runner(argv)`` -> (exit status, stderr); ``runner(argv, stdout=True)`` -> (exit status,
#: stdout) for the commands that list.
Runner = Callable[..., "tuple[int, str]"]


@dataclass(frozen=True)
class Rule:
    """One iptables rule: its chain and what follows the chain (matches and target), in
    ``table`` (``filter`` unless said)."""

    chain: str
    spec: tuple
    table: str = "filter"

    def args(self) -> list:
        return [self.chain, *self.spec]

    def __str__(self) -> str:
        return shlex.join(self.args())


# ------------------------------------------------------------------------- the rules

def rst_rule(port: int = LAB_PORT, mark: int = DEFAULT_MARK) -> Rule:
    """The lab's RST block (the lecture's iptables rule), from the responder's contract."""
    chain, *spec = _contract_rst_rule(port, mark)
    return Rule(chain, tuple(spec))


def drop_rules(cond, isn: int | None, client_ip: str, port: int = LAB_PORT) -> list[Rule]:
    """The rules for one ``drop`` condition (:class:`harness.judge.model.Condition`): K copies
    of a rule that drops exactly the first packet reaching it (``-m statistic --mode nth
    --every 1000000 --packet 0``), so K of them drop the first K.  A relative ``ack N``/``seq
    N`` becomes absolute through the responder's fixed ISN ``isn``, matched with ``-m u32``;
    ``ack-only`` (c>s) matches the client's pure ACKs by their flags, whatever the ISN."""
    if cond.direction == "c>s":
        spec = ["-p", "tcp", "-s", client_ip, "--dport", str(port)]
        chain, offset = "INPUT", 8                     # the TCP ack field
    else:
        spec = ["-p", "tcp", "-d", client_ip, "--sport", str(port)]
        chain, offset = "OUTPUT", 4                    # the TCP seq field
    if cond.field == "ack-only":
        # flags exactly ACK among SYN ACK FIN RST PSH: the client's pure ACKs (and unpushed
        # data, which the lessons that use this do not send); no number, so any ISN will do
        spec += ["--tcp-flags", "SYN,ACK,FIN,RST,PSH", "ACK"]
    elif cond.field:
        if isn is None:
            raise LabError(f"condition {cond.text!r} needs a fixed ISN (--isn N)")
        absolute = (isn + cond.value) & 0xFFFFFFFF
        spec += ["-m", "u32", "--u32", f"0>>22&0x3C@{offset}={absolute:#x}"]
    spec += ["-m", "statistic", "--mode", "nth", "--every", "1000000", "--packet", "0",
             "-m", "comment", "--comment", COMMENT, "-j", "DROP"]
    return [Rule(chain, tuple(spec))] * cond.count


def host_tag(prefix: str) -> str:
    """The comment on lab ``prefix``'s rules on its host side."""
    return HOST_TAG.format(prefix=prefix)


def peer_rst_rule(src: str, sport: int, dst: str, dport: int, mark: int = PEER_MARK, *,
                  interface: str | None = None, lab: str | None = None) -> Rule:
    """The Scapy peer's RST block: the host kernel's RSTs on the peer's own 4-tuple, unless
    the peer marked them; only out of ``interface`` (the lab's capture interface) when given,
    tagged with lab ``lab``'s :func:`host_tag` when given."""
    spec = ["-p", "tcp", "-s", src, "--sport", str(sport), "-d", dst, "--dport", str(dport)]
    if interface:
        spec[:0] = ["-o", interface]
    spec += ["--tcp-flags", "RST", "RST", "-m", "mark", "!", "--mark", hex(mark)]
    if lab:
        spec += ["-m", "comment", "--comment", host_tag(lab)]
    return Rule("OUTPUT", tuple(spec + ["-j", "DROP"]))


def port_rst_rule(port: int) -> Rule:
    """Every RST from ``port`` (the bench's Scapy responder cannot mark its packets)."""
    return Rule("OUTPUT", ("-p", "tcp", "--sport", str(port), "--tcp-flags", "RST", "RST",
                           "-j", "DROP"))


def quiet_rule(vm_ip: str, port: int = LAB_PORT) -> Rule:
    """``responder.contract.quiet_rule`` in table ``raw``: for load only (``--rx packet``)."""
    chain, *spec = _contract_quiet_rule(vm_ip, port)
    return Rule(chain, tuple(spec), table="raw")


# ------------------------------------------------------------------------- where they go

def _subprocess_runner(make_argv, where: str) -> Runner:
    """A runner that runs ``make_argv(argv)`` here with subprocess."""
    def run(argv: list, stdout: bool = False) -> tuple[int, str]:
        full = make_argv(list(argv))
        try:
            res = subprocess.run(full, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return 124, f"{argv[0]} did not finish within 30 s"
        except FileNotFoundError:
            return 127, f"{full[0]} is not installed"
        return res.returncode, res.stdout if stdout else res.stderr.strip()
    run.where = where
    return run


def local(prefix=()) -> Runner:
    """Run iptables on this machine under ``prefix`` (e.g. ``ip netns exec NS``)."""
    prefix = list(prefix)
    return _subprocess_runner(lambda argv: prefix + argv, " ".join(prefix) or "this machine")


def on_host_side(backend) -> Runner:
    """Run iptables on ``backend``'s host side, wherever that is (``backend.host_argv``: its
    host namespace here, this machine itself, or a lab host over SSH)."""
    return _subprocess_runner(backend.host_argv, f"the host side of lab '{backend.prefix}'")


def over_ssh(ssh) -> Runner:
    """Run iptables in the lab VM over ``ssh`` (a :class:`harness.run.ssh.LabSSH`)."""
    def run(argv: list, stdout: bool = False) -> tuple[int, str]:
        res = ssh.run(shlex.join(argv), check=False, timeout=30)
        return res.status, res.stdout if stdout else res.stderr.strip()
    run.where = "the lab VM"
    return run


class Firewall:
    """iptables through a runner: ``Firewall(over_ssh(ssh)).check(rst_rule())``."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.where = getattr(runner, "where", "the lab")

    def _iptables(self, op: str, rule: Rule) -> tuple[int, str]:
        table = [] if rule.table == "filter" else ["-t", rule.table]
        return self.runner(["iptables", "-w", LOCK_WAIT_S, *table, op, *rule.args()])

    def listing(self, chain: str, table: str = "filter") -> str:
        """``iptables -v -S CHAIN``: the chain's rules with their packet counters ("" if the
        chain cannot be read)."""
        status, out = self.runner(["iptables", "-w", LOCK_WAIT_S, "-t", table, "-v", "-S",
                                   chain], stdout=True)
        return out if status == 0 else ""

    def add(self, rule: Rule, *, first: bool = False) -> None:
        """Append (``first``: insert at the top); raise LabError naming the rule if refused."""
        status, err = self._iptables("-I" if first else "-A", rule)
        if status != 0:
            raise LabError(f"iptables in {self.where} refused `{'-I' if first else '-A'} "
                           f"{rule}` (exit {status}): {err or 'no message'}")

    def check(self, rule: Rule) -> bool:
        """Is ``rule`` in its chain?"""
        return self._iptables("-C", rule)[0] == 0

    def delete(self, rule: Rule) -> bool:
        """Delete one copy; False if there was none (or it could not be deleted)."""
        return self._iptables("-D", rule)[0] == 0

    def delete_all(self, rule: Rule, limit: int = 1000) -> int:
        """Delete every copy of ``rule``; how many went."""
        n = 0
        while n < limit and self.delete(rule):
            n += 1
        return n

    def rules(self, chain: str) -> list[Rule] | None:
        """The rules in ``chain`` as ``iptables -S`` prints them (None: iptables could not be
        asked, e.g. not root)."""
        status, out = self.runner(["iptables", "-w", LOCK_WAIT_S, "-S", chain], stdout=True)
        if status != 0:
            return None
        found = []
        for line in out.splitlines():
            words = shlex.split(line)
            if len(words) > 2 and words[0] == "-A" and words[1] == chain:
                found.append(Rule(chain, tuple(words[2:])))
        return found

    def tagged(self, tag: str, chain: str = "OUTPUT") -> list[Rule] | None:
        """The rules in ``chain`` whose ``-m comment`` is exactly ``tag``."""
        rules = self.rules(chain)
        if rules is None:
            return None
        return [r for r in rules if _comment(r) == tag]

    def remove_tagged(self, tag: str, chain: str = "OUTPUT") -> list[Rule]:
        """Delete every rule tagged ``tag`` (those a killed run left); the ones deleted."""
        gone = []
        for rule in self.tagged(tag, chain) or []:
            if self.delete(rule):
                gone.append(rule)
        return gone

    @contextlib.contextmanager
    def applied(self, rules, *, first: bool = False):
        """``rules`` in force for the ``with`` body; each one added is deleted afterwards, in
        reverse order, also when adding a later one or the body fails."""
        added: list[Rule] = []
        try:
            for rule in rules:
                self.add(rule, first=first)
                added.append(rule)
            yield self
        finally:
            for rule in reversed(added):
                self.delete(rule)


def _comment(rule: Rule) -> str | None:
    spec = list(rule.spec)
    for i, word in enumerate(spec[:-1]):
        if word == "--comment":
            return spec[i + 1]
    return None


def host_rules(prefix: str, exec_prefix=()) -> list[str] | None:
    """Lab ``prefix``'s rules on its host side (under ``exec_prefix``; ``[]``: here), as text
    (None: iptables could not be asked)."""
    return tagged_rules(prefix, local(exec_prefix))


def tagged_rules(prefix: str, runner: Runner) -> list[str] | None:
    """Lab ``prefix``'s tagged rules where ``runner`` runs iptables (e.g. :func:`on_host_side`
    of a lab on a lab host), as text (None: iptables could not be asked)."""
    found = Firewall(runner).tagged(host_tag(prefix))
    return None if found is None else [str(r) for r in found]


def remove_host_rules(prefix: str, exec_prefix=()) -> list[str]:
    """Remove lab ``prefix``'s rules from its host side; the ones removed, as text."""
    return [str(r) for r in Firewall(local(exec_prefix)).remove_tagged(host_tag(prefix))]
