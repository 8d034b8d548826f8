"""The vagrant backend: the Vagrantfile validates (CI, no VM), and one real end-to-end run with
vagrant-libvirt — libvirtd inside the lab's namespace, the local box built from the qemu
backend's image, `vagrant up` with its Ansible provisioner, the demo, a submission graded on it (C linked
-static on the host, copied in, run as root in the VM), `vagrant destroy` — that leaves nothing
behind, also when it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT, new_prefix, root_ns_state

RST_RULE = ("-A OUTPUT -p tcp -m tcp --sport 80 --tcp-flags RST RST "
            "-m mark ! --mark 0x5e -j DROP")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("box", ["debian/bookworm64", "tcplab/debian12"])
def test_vagrantfile_validates(box, tmp_path):
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (packages/apt-vm.txt)")
    env = dict(os.environ, TCPLAB_BOX=box, VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), TCPLAB_LIBVIRT_DRIVER="qemu")
    res = subprocess.run(["vagrant", "validate"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout


@pytest.mark.e2e
@pytest.mark.vagrant
def test_vagrant_libvirt_up_provision_demo_destroy(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, libvirtd)")
    missing = [t for t in ("vagrant", "libvirtd", "virsh", "qemu-system-x86_64", "debugfs")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages/apt-vm.txt)")
    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    from harness.run.ssh import LabSSH
    from harness.util import pids_mentioning

    before = root_ns_state()
    lab = get_backend("vagrant", new_prefix("vg"), provider="libvirt")
    try:
        t0 = time.monotonic()
        with lab.locked():
            bring_up(lab)
        print(f"vagrant libvirt lab up + provisioned in {time.monotonic() - t0:.0f} s")
        st = lab.status()
        assert st["up"] and st["vm"] == "running", st
        assert lab.capture_interface == "vboxnet0"
        with LabSSH(lab.ssh_endpoint()) as ssh:
            assert ssh.run("id -u").stdout.strip() == "0"
            assert "192.168.56.100/24" in ssh.run("ip -o -4 addr show").stdout
            rules = ssh.run("iptables -S OUTPUT").stdout
            assert RST_RULE in rules and rules.count("--tcp-flags RST RST") == 1, rules
            ssh.run("cd /opt/tcplab && python3 -m responder --help")
        try:
            from harness.run.demo import run_demo
        except ImportError:
            run_demo = None
        if run_demo is not None:
            res = run_demo(lab, "hello", runs_dir=tmp_path)
            assert res.ok, res.reason
        _grade_on(lab, tmp_path)
    finally:
        lab.down()
    assert lab.host_ns not in namespaces()
    assert not lab.state_dir.exists()
    assert not pids_mentioning(str(lab.state_dir) + "/")
    assert root_ns_state() == before, "the vagrant lab changed the root network namespace"


def _grade_on(lab, tmp_path) -> None:
    """invoke grade's vagrant path on this lab (as a class run's job grades on a leased lab):
    naive.c built -static in the sandbox here, copied into the VM, root there under limits."""
    from harness.grade.grader import grade
    subs = ROOT / "tests" / "submissions"
    with lab.locked():                      # held, as the class run that leases it holds it
        g, _ = grade(subs / "naive.c", rubric=subs / "one-lesson.yml", backend="vagrant",
                     prefix=lab.prefix, out_dir=tmp_path / "grades", leased=True)
    assert g["backend"] == "vagrant", g
    assert {l["lesson"]: l["status"] for l in g["lessons"]} == {"handshake": "pass"}, g
    assert g["build"]["how"] == ("gcc -O2 -Wall -static -o responder naive.c in the sandbox "
                                 "on the host, copied into the guest")
    assert g["isolation"].startswith("root inside the Vagrant VM")
