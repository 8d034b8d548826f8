"""End-to-end: labs on a remote lab host (``--hosts INVENTORY``).

The lab host is a real Debian 12 guest with its own kernel, booted by the qemu backend's
machinery from the ``labhost`` image variant (tshark/dumpcap, tcpdump, nc, Scapy baked in: the
guest has no package mirror); its tap lives in the qemu lab's namespace, so this machine's root
namespace is never touched, and it is reached over SSH through a ProxyCommand in that
namespace.  The inventory (YAML, Ansible's own format) names three hosts:

* ``good``: the guest, as root: two netns labs are made inside it and run lessons;
* ``noroot``: the same guest as a user without root (made by the test): named, with the fix;
* ``nowhere``: 192.168.56.7 inside the qemu lab's namespace, where nothing answers: named as
  unreachable, with the fix -- and neither bad host stops ``good``.

One guest and one ``invoke up --hosts`` serve the module (TCG: boot ~20-60 s, the Ansible run
~2.5-4 min); the module's fixture removes the labs and the guest whatever happens.  Cost here:
~6-7 min with the image cached; a cold cache adds its build (~3.5 min).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, new_prefix, require_vm_machine, root_ns_state

pytestmark = [pytest.mark.e2e, pytest.mark.qemu, pytest.mark.remote]

NOWHERE = "192.168.56.7"          # inside the qemu lab's namespace: nothing is there


def invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def guest(lh, command: str, check: bool = True) -> str:
    """Run ``command`` as root in the lab host (the guest), over the qemu lab's own SSH."""
    from harness.run.ssh import LabSSH
    with LabSSH(lh.qemu.ssh_endpoint()) as ssh:
        return ssh.run(command, timeout=60, check=check).stdout


def _boot_labhost(q) -> None:
    """Boot qemu lab ``q`` from the lab-host image (the qemu backend boots the default image:
    its ensure_image is pointed at the 'labhost' variant while it comes up)."""
    from harness.lab import image
    original = image.ensure_image
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image, "ensure_image", lambda: original("labhost"))
        with q.locked():
            q.up()


def _inventory(path, q, base: str) -> None:
    common = (f'-o ProxyCommand="ip netns exec {q.host_ns} nc %h %p" '
              f"-o UserKnownHostsFile={q.state_dir}/known_hosts -o ConnectTimeout=20")
    host = {"ansible_ssh_private_key_file": str(q.state_dir / "id_ed25519"),
            "ansible_ssh_common_args": common, "ansible_python_interpreter": "/usr/bin/python3",
            "tcplab_labhost_manage_packages": False}
    inv = {"all": {"hosts": {
        "good": {"ansible_host": q.vm_ip, "ansible_user": "root", **host},
        "noroot": {"ansible_host": q.vm_ip, "ansible_user": "tcplabuser", **host},
        "nowhere": {"ansible_host": NOWHERE, "ansible_user": "root", **host}}}}
    # YAML is a superset of JSON: this is Ansible's YAML inventory format
    path.write_text(f"# lab hosts for tests/e2e/test_remote.py (labs {base}1, {base}2)\n"
                    + json.dumps(inv, indent=2) + "\n")


@pytest.fixture(scope="module")
def lh(tmp_path_factory):
    require_vm_machine("remote labs need root here (namespaces, tap) and on the lab host")
    from harness.lab import get_backend
    from harness.lab.remote import RemoteBackend, down_on_hosts
    from harness.util import LabError
    before = root_ns_state()
    base = "r" + uuid.uuid4().hex[:6]
    q = get_backend("qemu", new_prefix("lh"))
    inv = tmp_path_factory.mktemp("remote") / "labhosts.yml"
    try:
        _boot_labhost(q)
        from harness.run.ssh import LabSSH
        with LabSSH(q.ssh_endpoint()) as ssh:     # a user without root, who may log in
            ssh.run("id tcplabuser >/dev/null 2>&1 || useradd -m tcplabuser; "
                    "install -d -o tcplabuser -m 700 ~tcplabuser/.ssh && "
                    "install -o tcplabuser -m 600 /root/.ssh/authorized_keys "
                    "~tcplabuser/.ssh/authorized_keys")
        _inventory(inv, q, base)
        yield SimpleNamespace(qemu=q, inventory=str(inv), base=base, before=before, extra={})
    finally:
        try:
            if inv.exists():
                down_on_hosts(inv)
        except LabError:
            pass
        for p in (f"{base}1", f"{base}2"):
            RemoteBackend(prefix=p)._teardown()     # its lab host is going away anyway
        q.down()


@pytest.fixture(scope="module")
def up(lh):
    """``invoke up --hosts INVENTORY --labs 2`` once for the module."""
    t0 = time.monotonic()
    res = invoke("up", "--hosts", lh.inventory, "--labs", "2", "--prefix", lh.base)
    lh.extra["up_seconds"] = time.monotonic() - t0
    return res


def test_up_makes_labs_on_the_good_host_and_names_each_bad_one(lh, up):
    out = up.stdout + up.stderr
    assert up.returncode == 1, out                      # two lab hosts failed ...
    assert f"lab host good: lab(s) {lh.base}1, {lh.base}2 up" in up.stdout, out
    # ... each named, with what to fix, and neither stopped the good one
    m = re.search(r"lab host nowhere: FAILED: (.*)", up.stdout)
    assert m and m.group(1).startswith("lab host nowhere is unreachable over SSH ("), out
    assert f"check its address (ansible_host={NOWHERE})" in m.group(1)
    assert "ansible_ssh_private_key_file" in m.group(1) and lh.inventory in m.group(1)
    m = re.search(r"lab host noroot: FAILED: (.*)", up.stdout)
    assert m and "tcplab needs root on lab host noroot" in m.group(1), out
    assert "log in as root (ansible_user=root) or set ansible_become=true" in m.group(1)
    assert "2 remote lab(s) up" in up.stdout
    st = json.loads(invoke("status", "--all", "--json").stdout)
    mine = {r["prefix"]: r for r in st if r["prefix"].startswith(lh.base)}
    assert sorted(mine) == [f"{lh.base}1", f"{lh.base}2"]
    for row in mine.values():
        assert row["backend"] == "remote" and row["up"] and row["ssh"] and row["provisioned"]
        assert row["labhost"] == "good" and row["namespaces"] == {}


def test_the_labs_are_netns_labs_inside_the_lab_host(lh, up):
    from harness.lab import net
    ns = guest(lh, "ip netns list")
    for p in (f"{lh.base}1", f"{lh.base}2"):
        assert f"{p}-host" in ns and f"{p}-vm" in ns
        assert f"{p}-host" not in net.namespaces()          # nothing of it on this machine
        rules = guest(lh, f"ip netns exec {p}-vm iptables -S OUTPUT")
        assert "--tcp-flags RST RST -m mark ! --mark 0x5e -j DROP" in rules
    assert guest(lh, "uname -r").strip() != os.uname().release     # its own kernel
    assert guest(lh, "stat -c %a /run/tcplab-labhost").strip() == "700"


def _onhost_up(prefix: str, keys: dict) -> str:
    return ("cd /run/tcplab-labhost && python3 -m harness.lab.onhost up --keys - "
            f"{prefix} 2>/dev/null <<'EOF'\n{json.dumps(keys)}\nEOF")


def test_the_lab_host_remakes_a_lab_idempotently_and_refuses_one_made_for_another(lh, up,
                                                                                   tmp_path):
    """onhost's `up` again with the lab's own keys changes nothing; with another host key
    (another controller's lab of the same name) it refuses, and the lab keeps running."""
    from harness.lab.remote import RemoteBackend
    p = f"{lh.base}1"
    b = RemoteBackend(prefix=p)
    sd = b.state_dir
    keys = {p: {"authorized_key": (sd / "id_ed25519.pub").read_text().strip(),
                "host_key": (sd / "ssh_host_ed25519_key").read_text(),
                "host_key_pub": (sd / "ssh_host_ed25519_key.pub").read_text().strip()}}
    again = json.loads(guest(lh, _onhost_up(p, keys)))
    assert again["labs"][p]["ok"] and again["labs"][p]["made"] is False, again
    assert again["changed"] is False
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    keys[p].update(host_key=(tmp_path / "k").read_text(),
                   host_key_pub=(tmp_path / "k.pub").read_text().strip())
    refused = json.loads(guest(lh, _onhost_up(p, keys)))
    assert not refused["labs"][p]["ok"]
    assert "exists on this lab host with another SSH host key" in refused["labs"][p]["error"]
    assert refused["changed"] is False and b.status()["up"]


@pytest.mark.parametrize("scenario, lab", [("hello", 1), ("close-states-passive", 2),
                                           ("challenge-ack", 2)])
def test_a_lesson_runs_end_to_end_on_a_remote_lab(lh, up, scenario, lab, tmp_path):
    """nc, the Python client and the Scapy peer run on the lab host (its copy of the harness),
    dumpcap streams the capture back, the responder runs in the lab's VM namespace there; the
    run folder is here, complete."""
    from harness.lab import get_backend
    from harness.run.demo import run_demo
    b = get_backend("remote", f"{lh.base}{lab}")
    with b.locked():
        res = run_demo(b, scenario, runs_dir=tmp_path)
    assert res.ok, res.reason
    d = res.run_dir
    assert d.parent == tmp_path
    assert (d / "capture.pcapng").read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert "listening on 192.168.56.100:80" in (d / "responder.log").read_text()
    result = json.loads((d / "result.json").read_text())
    assert result["ok"] and result["run"]["backend"] == "remote"
    assert result["run"]["client_argv"][0] == "ssh"
    if scenario == "hello":
        assert res.client_output.startswith(b"Hello TCP\n\0")
        assert "Flags [S.]" in (d / "transcript.txt").read_text()


def test_nothing_of_a_run_is_left_on_the_lab_host(lh, up):
    """After the lessons: no dumpcap, nc or client in the labs' host namespaces, only the
    lab's sshd in its VM namespace (the local ssh's end ended each remote command)."""
    for p in (f"{lh.base}1", f"{lh.base}2"):
        left = guest(lh, f"for pid in $(ip netns pids {p}-host); do "
                         f"cat /proc/$pid/comm; done").split()
        assert left == [], left
        vm = guest(lh, f"for pid in $(ip netns pids {p}-vm); do cat /proc/$pid/comm; done")
        assert set(vm.split()) <= {"sshd"}, vm
    assert "dumpcap" not in guest(lh, "ps -eo comm")


def test_root_namespace_untouched(lh, up):
    assert root_ns_state() == lh.before


def test_down_all_hosts_leaves_nothing_on_the_lab_host(lh, up):
    """Last: every lab on the inventory's lab hosts goes, with tcplab's code there; the bad
    hosts are named again (exit 1), and nothing of the labs is left here either."""
    from harness.lab.state import LabState
    from harness.util import pids_mentioning
    res = invoke("down", "--all", "--hosts", lh.inventory)
    assert res.returncode == 1 and "lab host good: clean" in res.stdout, res.stdout + res.stderr
    assert "lab host nowhere: FAILED" in res.stdout
    assert lh.base not in guest(lh, "ip netns list")
    assert guest(lh, "ls -d /run/tcplab /run/tcplab-labhost 2>&1 || true").count(
        "No such file") == 2
    assert "sshd -f" not in guest(lh, "ps -eo args")
    for p in (f"{lh.base}1", f"{lh.base}2"):
        assert not LabState(p).dir.exists()
        assert not pids_mentioning(str(LabState(p).dir) + "/")
    assert root_ns_state() == lh.before
    print(f"remote: invoke up --hosts (3 hosts, 2 labs) took {lh.extra['up_seconds']:.0f} s")
