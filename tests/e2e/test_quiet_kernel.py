"""End-to-end: ``--rx packet`` with the quiet kernel (issue 13 item 3).

With ``responder.contract.quiet_rule`` in the VM namespace the lab port's segments are dropped
in raw PREROUTING, before the kernel's IP stack: the responder, receiving on its packet
socket, still answers (nc gets the lecture's three lines), while the VM kernel makes no RST at
all (the lecture's RST rule counts none) -- what ``invoke bench`` measures as "quiet kernel".
The lecture's RST rule stays in place throughout: the quiet rule is an addition, never a
replacement.
"""

from __future__ import annotations

import subprocess

import pytest

from bench.account import rule_packets
from harness.util import wait_until
from responder.apps import HELLO_LINES
from responder.contract import LAB_PORT, quiet_rule, rst_rule

pytestmark = pytest.mark.e2e


def _counter(backend, table: str, rule: list) -> int | None:
    out = subprocess.run(backend.vm_exec_prefix() + ["iptables", "-t", table, "-v", "-S",
                                                     rule[0]],
                         capture_output=True, text=True, check=True).stdout
    return rule_packets(out, rule)


def test_packet_receive_answers_while_the_kernel_sees_nothing(lab, tmp_path):
    ipt = lab.vm_exec_prefix() + ["iptables", "-t", "raw"]
    quiet = quiet_rule(lab.vm_ip, LAB_PORT)
    log = tmp_path / "responder.log"
    subprocess.run(ipt + ["-I", *quiet], check=True)
    proc = None
    try:
        rst_before = _counter(lab, "filter", rst_rule())
        assert rst_before is not None, "the lab's RST rule is not in place"
        with open(log, "wb") as err:
            proc = subprocess.Popen(lab.vm_exec_prefix() + [
                "/usr/bin/python3", "-m", "responder", "--listen", f"{lab.vm_ip}:{LAB_PORT}",
                "--app", "hello", "--rx", "packet"], cwd=lab.responder_dir(), stderr=err)
        assert wait_until(lambda: b"listening on" in log.read_bytes(), 15), log.read_text()
        got = subprocess.run(lab.host_exec_prefix() + ["nc", "-w", "3", lab.vm_ip,
                                                       str(LAB_PORT)],
                             input=b"", capture_output=True, timeout=20).stdout
        assert got == b"".join(HELLO_LINES)
        assert _counter(lab, "filter", rst_rule()) == rst_before     # no RST was even made
        assert _counter(lab, "raw", quiet) >= 5      # the client's segments, dropped early
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        while subprocess.run(ipt + ["-C", *quiet], capture_output=True).returncode == 0:
            subprocess.run(ipt + ["-D", *quiet], check=True)
    assert proc.returncode == 0, log.read_text()
