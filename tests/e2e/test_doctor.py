"""`invoke doctor` on a real lab: all checks pass on a good lab, and breaking one piece makes
exactly the check for that piece fail with its explanation."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.e2e


def by_name(checks):
    return {c.name: c for c in checks}


def test_doctor_passes_on_a_good_lab(lab):
    from harness.doctor import diagnose
    checks = by_name(diagnose(lab))
    bad = {n: c.detail for n, c in checks.items() if not c.ok}
    assert not bad, bad
    assert {"host offload", "vm offload", "rst block", "handshake", "scapy"} <= set(checks)


def test_doctor_names_each_broken_piece(lab):
    from harness.doctor import diagnose
    from harness.lab.firewall import Firewall, over_ssh, rst_rule
    from harness.run.ssh import LabSSH
    with LabSSH(lab.ssh_endpoint()) as ssh:
        assert Firewall(over_ssh(ssh)).delete(rst_rule())
    subprocess.run(lab.host_exec_prefix() + ["ethtool", "-K", "vboxnet0", "tx", "on"],
                   check=True, capture_output=True)
    checks = by_name(diagnose(lab))
    assert not checks["rst block"].ok and "RST" in checks["rst block"].why
    assert not checks["host offload"].ok and "incorrect checksums" in checks["host offload"].why
    # Without the RST block the VM kernel refuses the connection before the responder answers.
    assert not checks["handshake"].ok
    assert checks["vm offload"].ok and checks["ssh"].ok


def test_doctor_on_a_missing_lab_says_run_up():
    from harness.doctor import diagnose
    from harness.lab import get_backend
    from tests.conftest import new_prefix, require_lab_machine
    require_lab_machine()
    checks = by_name(diagnose(get_backend("netns", new_prefix("doc"))))
    assert not checks["lab"].ok and "invoke up" in checks["lab"].why
