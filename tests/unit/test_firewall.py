"""harness.lab.firewall: the one place that runs iptables on a lab -- the rules it builds, and
adding/checking/deleting them through a runner (a recording one here, and the real iptables in
a namespace made for the test)."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from harness.lab.firewall import (COMMENT, Firewall, drop_rules, host_rules, host_tag, local,
                                  peer_rst_rule, port_rst_rule, remove_host_rules, rst_rule)
from harness.util import LabError
from responder.contract import rst_rule as contract_rst_rule


class Recorder:
    """A runner that records argv and answers from ``status`` (op -> exit status)."""

    def __init__(self, **status):
        self.calls, self.status = [], status
        self.where = "a recorder"

    def __call__(self, argv):
        self.calls.append(argv)
        op = argv[3]
        return self.status.get(op.strip("-"), 0), "" if not self.status.get(op.strip("-")) \
            else "iptables: No chain/target/match by that name."


def test_the_rst_rule_is_the_responders_contract():
    assert rst_rule().args() == contract_rst_rule()
    assert str(rst_rule(8080, 0x7)) == ("OUTPUT -p tcp --sport 8080 --tcp-flags RST RST -m mark "
                                        "'!' --mark 0x7 -j DROP")


def test_peer_and_port_rules():
    r = peer_rst_rule("192.168.56.1", 40001, "192.168.56.100", 80)
    assert r.chain == "OUTPUT" and "0x5f" in r.spec and "40001" in r.spec
    assert port_rst_rule(8081).args() == ["OUTPUT", "-p", "tcp", "--sport", "8081",
                                          "--tcp-flags", "RST", "RST", "-j", "DROP"]


def test_the_peer_rule_on_a_host_side_is_scoped_and_tagged():
    r = peer_rst_rule("192.168.56.1", 40001, "192.168.56.100", 80, interface="vboxnet0",
                      lab="lab7")
    assert str(r) == ("OUTPUT -o vboxnet0 -p tcp -s 192.168.56.1 --sport 40001 "
                      "-d 192.168.56.100 --dport 80 --tcp-flags RST RST -m mark '!' --mark 0x5f "
                      "-m comment --comment tcplab-host:lab7 -j DROP")
    assert host_tag("lab7") == "tcplab-host:lab7"


def test_drop_rules_need_a_fixed_isn_for_a_sequence_number():
    from harness.judge.scenario import Condition
    cond = Condition("drop", "c>s", "ack", 6, 2, text="drop c>s ack 6 first 2")
    with pytest.raises(LabError, match="needs a fixed ISN"):
        drop_rules(cond, None, "192.168.56.1")
    rules = drop_rules(cond, 0xFFFFFFFF, "192.168.56.1")
    assert len(rules) == 2 and "0>>22&0x3C@8=0x5" in rules[0].spec     # wraps around 2^32
    assert COMMENT in rules[0].spec


def test_applied_removes_what_it_added_also_when_a_later_rule_is_refused():
    rec = Recorder()
    fw = Firewall(rec)
    a, b = rst_rule(), port_rst_rule(1)
    with pytest.raises(RuntimeError):
        with fw.applied([a, b]):
            raise RuntimeError("the run failed")
    ops = [(c[3], c[4:]) for c in rec.calls]
    assert ops == [("-A", a.args()), ("-A", b.args()), ("-D", b.args()), ("-D", a.args())]
    assert all(c[:3] == ["iptables", "-w", "10"] for c in rec.calls)

    class RefuseSecond(Recorder):
        def __call__(self, argv):
            self.calls.append(argv)
            refused = argv[3] == "-A" and argv[4:] == b.args()
            return (1, "iptables: Bad rule") if refused else (0, "")
    rec = RefuseSecond()
    with pytest.raises(LabError, match="refused `-A OUTPUT -p tcp --sport 1"):
        with Firewall(rec).applied([a, b]):
            pytest.fail("the body must not run")
    assert [c[3] for c in rec.calls] == ["-A", "-A", "-D"] and rec.calls[-1][4:] == a.args()


def test_the_real_iptables_in_a_namespace_of_its_own():
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    ns = f"fw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        fw = Firewall(local(["ip", "netns", "exec", ns]))
        assert not fw.check(rst_rule())
        with fw.applied([rst_rule(), rst_rule()]):
            assert fw.check(rst_rule())
            rules = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-S", "OUTPUT"],
                                   capture_output=True, text=True).stdout
            assert rules.count("--tcp-flags RST RST -m mark ! --mark 0x5e -j DROP") == 2
        assert not fw.check(rst_rule())
        fw.add(port_rst_rule(8081))
        fw.add(port_rst_rule(8081), first=True)
        assert fw.delete_all(port_rst_rule(8081)) == 2 and not fw.delete(port_rst_rule(8081))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_a_labs_host_rules_are_found_by_their_tag_and_removed_alone():
    """What `down` does on a host side that is this machine (after a killed run left a Scapy
    peer's rule): list the lab's tagged rules and delete them, and no one else's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    ns = f"fw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    pre = ["ip", "netns", "exec", ns]
    try:
        fw = Firewall(local(pre))
        mine = [peer_rst_rule("192.168.56.1", p, "192.168.56.100", 80, interface="vboxnet0",
                              lab="laba") for p in (40001, 40002)]
        other = peer_rst_rule("192.168.56.1", 40003, "192.168.56.100", 80,
                              interface="vboxnet0", lab="labb")
        untagged = peer_rst_rule("192.168.56.1", 40004, "192.168.56.100", 80)
        for r in (*mine, other, untagged):
            fw.add(r)
        # iptables -S prints them its own way (-s 192.168.56.1/32, -m tcp ...)
        listed = host_rules("laba", pre)
        assert [("--sport 40001" in r, "--sport 40002" in r) for r in listed] == \
            [(True, False), (False, True)], listed
        assert all("-o vboxnet0" in r and "tcplab-host:laba" in r for r in listed)
        assert [r.spec[-3] for r in fw.tagged(host_tag("labb"))] == ["tcplab-host:labb"]
        assert remove_host_rules("laba", pre) == listed
        assert host_rules("laba", pre) == []
        assert fw.check(other) and fw.check(untagged)
        assert remove_host_rules("laba", pre) == []
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert host_rules("laba", pre) is None          # the namespace is gone: cannot be asked
