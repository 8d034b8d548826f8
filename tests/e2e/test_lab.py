"""End-to-end tests of the netns lab itself: up, idempotence, status, down, several labs,
`down --all` and `status --all`, bad input — on real namespaces, a real sshd and a real Ansible
run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, new_prefix, root_ns_state

pytestmark = pytest.mark.e2e
INVOKE = [sys.executable, "-m", "invoke"]


def invoke(*args, check=False, uid=None, timeout=300, env=None):
    """Run the real CLI.  With ``uid``, the process sees that effective user id: the harness's
    root check reads os.geteuid(), and really dropping to another user would also need the
    checkout (often a mode-700 temporary clone) to be readable by that user."""
    cmd = INVOKE + list(args)
    if uid is not None:
        cmd = [sys.executable, "-c",
               f"import os, runpy, sys; os.geteuid = lambda: {int(uid)}; "
               f"sys.argv = {['invoke', *args]!r}; "
               f"runpy.run_module('invoke', run_name='__main__')"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=check, env=env)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines() if l.strip()}


def test_up_is_idempotent_and_down_leaves_nothing(lab_factory):
    from harness.lab import get_backend
    from harness.lab.provision import provision
    from harness.run.ssh import LabSSH

    before = root_ns_state()
    lab = lab_factory(provision=False)
    first = provision(lab)
    assert first["failed"] == 0 and first["changed"] >= 1
    lab.up()                                   # a second up changes nothing and does not fail
    second = provision(lab)
    assert second["changed"] == 0, f"second provisioning changed something: {second}"

    st = lab.status()
    assert st["up"] and st["ssh"] and all(st["namespaces"].values())
    assert "192.168.56.1/24" in st["interface"]
    with LabSSH(lab.ssh_endpoint()) as ssh:
        rules = ssh.run("iptables -S OUTPUT").stdout
        assert ("-A OUTPUT -p tcp -m tcp --sport 80 --tcp-flags RST RST "
                "-m mark ! --mark 0x5e -j DROP") in rules
        assert rules.count("--tcp-flags RST RST") == 1, "the RST rule was added twice"
        addrs = ssh.run("ip -o -4 addr show dev eth1").stdout
        assert "192.168.56.100/24" in addrs
        off = ssh.run("ethtool -k eth1 | grep tx-checksumming").stdout
        assert "off" in off, off
        assert ssh.run(f"test -f {lab.responder_dir()}/responder/wire.py", check=False).status == 0
    assert root_ns_state() == before, "the lab changed the root network namespace"

    lab.down()
    assert not ({lab.host_ns, lab.vm_ns} & namespaces())
    assert not lab.state_dir.exists()
    assert root_ns_state() == before
    lab.down()                                 # nothing left to remove: still fine
    assert get_backend("netns", lab.prefix).status()["up"] is False


def test_two_labs_at_once(lab_factory):
    a = lab_factory(provision=False)
    b = lab_factory(provision=False)
    assert a.status()["up"] and b.status()["up"]
    a.down()
    assert b.status()["up"], "removing one lab broke the other"


def test_invoke_up_status_down_cli():
    prefix = new_prefix("cli")
    try:
        r = invoke("up", "--prefix", prefix)
        assert r.returncode == 0, r.stderr
        assert f"lab '{prefix}' is up" in r.stdout
        st = json.loads(invoke("status", "--prefix", prefix, "--json", check=True).stdout)
        assert st["up"] is True and st["provisioned"] is True
    finally:
        r = invoke("down", "--prefix", prefix)
    assert r.returncode == 0, r.stderr
    assert not ({f"{prefix}-host", f"{prefix}-vm"} & namespaces())
    st = json.loads(invoke("status", "--prefix", prefix, "--json", check=True).stdout)
    assert st["up"] is False and not any(st["namespaces"].values())


@pytest.mark.parametrize("prefix", ["Bad", "a/b", "x" * 11, "-rf", "lab_1", "", "lab\n"])
def test_bad_prefix_is_refused_with_one_line(prefix):
    r = invoke("up", "--prefix", prefix)
    assert r.returncode != 0
    assert "invalid lab prefix" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_busy_prefix_is_refused_and_not_touched():
    """A namespace with the lab's name that tcplab did not make is left alone."""
    prefix = new_prefix("busy")
    subprocess.run(["ip", "netns", "add", f"{prefix}-host"], check=True)
    try:
        r = invoke("up", "--prefix", prefix)
        assert r.returncode != 0
        assert "were not made by tcplab" in r.stderr
        assert f"{prefix}-host" in namespaces(), "up removed a namespace it did not make"
        assert f"{prefix}-vm" not in namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}-host"])


def test_not_root_gets_one_clear_line():
    prefix = new_prefix("nr")
    r = invoke("up", "--prefix", prefix, uid=65534)
    assert r.returncode != 0
    assert "needs root" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not ({f"{prefix}-host", f"{prefix}-vm"} & namespaces()), "a non-root up made a lab"


def test_failed_provisioning_of_a_fresh_lab_removes_it_and_keeps_the_log(tmp_path, monkeypatch):
    """A fresh `up` whose playbook fails removes what it made, and the error points to the
    playbook's log at a path that survives the state directory's removal."""
    import harness.lab.provision as prov
    from harness.lab import get_backend
    from harness.util import LabError
    from tests.conftest import require_lab_machine
    require_lab_machine()
    bad = tmp_path / "site.yml"
    bad.write_text("- name: Fail on purpose\n  hosts: tcplab_vm\n  tasks:\n"
                   "    - name: Fail\n      ansible.builtin.fail:\n        msg: tcplab-test-failure\n")
    monkeypatch.setattr(prov, "PLAYBOOK", bad)
    lab = get_backend("netns", new_prefix("fail"))
    try:
        with pytest.raises(LabError) as err:
            prov.bring_up(lab)
        assert not lab.exists() and not lab.state_dir.exists()
        log = lab.state_dir.parent / f"{lab.prefix}-failed-up-ansible.log"
        assert str(log) in str(err.value)
        assert "tcplab-test-failure" in log.read_text()
    finally:
        lab.down()
        (lab.state_dir.parent / f"{lab.prefix}-failed-up-ansible.log").unlink(missing_ok=True)


def test_down_all_removes_every_lab_also_after_kill_9_and_leaves_foreign_namespaces(tmp_path):
    """Three labs in a state root of this test's own (other people's labs in /run/tcplab stay
    out of it): two made with `invoke up`, one whose `invoke up` is killed with SIGKILL once
    its namespaces exist.  `status --all` lists them with their health; `down --all` removes
    them: no namespace, no process, no file in the root; a namespace named like a lab that
    tcplab did not make (and the process in it) stays."""
    from harness.util import pids_mentioning
    from tests.conftest import require_lab_machine
    require_lab_machine()
    root = Path(f"/run/tcplab-all{uuid.uuid4().hex[:6]}")
    env = dict(os.environ, TCPLAB_STATE_ROOT=str(root))
    a, b, k, foreign = (new_prefix(t) for t in ("alla", "allb", "allk", "allf"))
    ns_of = lambda p: {f"{p}-host", f"{p}-vm"}                            # noqa: E731
    others_before = namespaces() - ns_of(a) - ns_of(b) - ns_of(k)
    subprocess.run(["ip", "netns", "add", f"{foreign}-vm"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{foreign}-vm", "sleep", "120"])
    killed = None
    try:
        for p in (a, b):
            r = invoke("up", "--prefix", p, env=env)
            assert r.returncode == 0, r.stderr[-1500:]
        killed = subprocess.Popen(INVOKE + ["up", "--prefix", k], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.monotonic() + 120
        while not ns_of(k) <= namespaces():
            assert killed.poll() is None and time.monotonic() < deadline, "up ended early"
            time.sleep(0.02)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()

        rows = json.loads(invoke("status", "--all", "--json", env=env, check=True).stdout)
        by = {r["prefix"]: r for r in rows}
        assert set(by) == {a, b, k}, by.keys()
        for p in (a, b):
            assert by[p]["up"] and by[p]["ssh"] and by[p]["provisioned"] and by[p]["sshd_pid"]
            assert by[p]["backend"] == "netns" and all(by[p]["namespaces"].values())
        assert not by[k]["provisioned"] and set(by[k]["namespaces"]) == ns_of(k)
        text = invoke("status", "--all", env=env, check=True).stdout
        assert all(p in text for p in (a, b, k)) and "PREFIX" in text

        r = invoke("down", "--all", env=env)
        assert r.returncode == 0, r.stderr[-1500:]
        assert "removed 3 lab(s)" in r.stdout, r.stdout
        time.sleep(0.2)
        assert not (ns_of(a) | ns_of(b) | ns_of(k)) & namespaces()
        assert not pids_mentioning(str(root) + "/")
        assert list(root.iterdir()) == [], list(root.iterdir())
        assert f"{foreign}-vm" in namespaces() and sleeper.poll() is None, \
            "down --all touched a namespace tcplab did not make"
        assert others_before <= namespaces(), "down --all removed labs outside its state root"
        assert json.loads(invoke("status", "--all", "--json", env=env, check=True).stdout) == []
        r = invoke("down", "--all", env=env)             # nothing left: still fine
        assert r.returncode == 0 and "removed 0 lab(s)" in r.stdout, r.stderr
    finally:
        if killed is not None and killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        invoke("down", "--all", env=env)
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["ip", "netns", "del", f"{foreign}-vm"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_down_all_leaves_a_busy_lab_and_says_so(lab_factory, monkeypatch):
    """A lab another tcplab command holds (its lock) is not pulled from under it."""
    from harness.lab.labs import down_all
    root = Path(f"/run/tcplab-busy{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(root))
    try:
        lab = lab_factory(provision=False)
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sys, time; sys.path.insert(0, '.'); from harness.lab import get_backend\n"
            f"with get_backend('netns', {lab.prefix!r}).locked():\n"
            "    print('held', flush=True); time.sleep(60)")], cwd=ROOT, stdout=subprocess.PIPE,
            text=True, env=dict(os.environ, TCPLAB_STATE_ROOT=str(root)))
        try:
            assert holder.stdout.readline().strip() == "held"
            res = down_all(log=lambda m: None)
            assert res["busy"] == [lab.prefix] and res["removed"] == []
            assert lab.status()["up"]
        finally:
            holder.kill()
            holder.wait()
        assert down_all(log=lambda m: None)["removed"] == [lab.prefix]
        assert not lab.exists()
    finally:
        down_all(log=lambda m: None)        # the fixture's own down runs after the root is gone
        shutil.rmtree(root, ignore_errors=True)


def test_status_and_down_use_the_backend_the_lab_was_made_with(lab_factory):
    lab = lab_factory(provision=False)
    st = json.loads(invoke("status", "--prefix", lab.prefix, "--json", check=True).stdout)
    assert st["backend"] == "netns" and st["up"]
    r = invoke("down", "--prefix", lab.prefix, "--backend", "qemu")
    assert r.returncode != 0 and "made by the netns backend" in r.stderr, r.stderr
    assert lab.status()["up"], "a down with the wrong backend touched the lab"


# --- the recipe in docs/backends.md ("Adding a backend"), followed once -----------------------

from dataclasses import dataclass  # noqa: E402

from harness.lab.base import ANSIBLE_DIRS, NETMASK_BITS, Backend  # noqa: E402
from harness.lab import net  # noqa: E402
from harness.lab.net import Namespace  # noqa: E402


@dataclass
class RecipeBackend(Backend):
    """A backend written by the recipe alone: its host side is a namespace with a tap (no VM
    behind it, so SSH never answers).  One class, one registry line."""

    name: str = "recipe"

    def __post_init__(self):
        super().__post_init__()
        self.host_namespace = Namespace(f"{self.prefix}-host")

    def up(self) -> None:
        self._begin_up(*ANSIBLE_DIRS, tools=("ip",), flavour="tap only")
        self.host_namespace.make()
        if not net.link_exists(self.host_ns, self.capture_interface):
            net.tap(self.host_ns, self.capture_interface)
        net.addr_replace(self.host_ns, self.capture_interface, f"{self.host_ip}/{NETMASK_BITS}")
        net.link_up(self.host_ns, self.capture_interface)
        sleeper = [sys.executable, "-c", "import time; time.sleep(300)",  # a "daemon" that
                   str(self.state_dir) + "/"]                              # names the lab
        subprocess.Popen(self.host_exec_prefix() + sleeper, start_new_session=True)

    def down(self) -> None:
        self._teardown()

    def status(self) -> dict:
        st = self._status_base()
        st["interface"] = net.addr_brief(self.host_ns, self.capture_interface)
        st["up"] = all(st["namespaces"].values()) and st["interface"] is not None
        return st

    def ssh_endpoint(self):
        return self._endpoint()


def test_a_backend_written_by_the_recipe_works_with_one_registry_line(monkeypatch):
    import harness.lab
    from harness.lab import get_backend
    from harness.lab.labs import down_all, status_all
    from harness.util import pids_mentioning
    from tests.conftest import require_lab_machine
    require_lab_machine()
    monkeypatch.setitem(harness.lab.REGISTRY, "recipe", f"{__name__}:RecipeBackend")
    monkeypatch.setattr(harness.lab, "BACKENDS", tuple(harness.lab.REGISTRY))
    monkeypatch.setattr("harness.lab.labs.BACKENDS", tuple(harness.lab.REGISTRY))
    root = Path(f"/run/tcplab-rcp{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(root))
    b = get_backend("recipe", new_prefix("rcp"))
    try:
        with b.locked():
            b.up()
            b.up()                                   # idempotent
        st = b.status()
        assert st["up"] and "192.168.56.1/24" in st["interface"] and st["record"]
        assert b.ssh_endpoint().proxy_command == f"ip netns exec {b.host_ns} nc %h %p"
        rows = status_all()
        assert [(r["prefix"], r["backend"]) for r in rows] == [(b.prefix, "recipe")]
        assert pids_mentioning(str(b.state_dir) + "/")
        assert down_all(log=lambda m: None)["removed"] == [b.prefix]
        assert b.host_ns not in namespaces() and not b.state_dir.exists()
        assert not pids_mentioning(str(b.state_dir) + "/") and list(root.iterdir()) == []
    finally:
        b.down()
        shutil.rmtree(root, ignore_errors=True)


def test_a_locked_root_account_gets_pam_and_still_logs_in(lab_factory, monkeypatch):
    """Ubuntu locks root's password (`!` in /etc/shadow); sshd without PAM then refuses root's
    key. The lab's sshd uses PAM in that case (forced here with TCPLAB_SSHD_PAM=yes, since this
    machine's root is not locked) and the harness logs in as before."""
    from harness.run.ssh import LabSSH
    monkeypatch.setenv("TCPLAB_SSHD_PAM", "yes")
    b = lab_factory(provision=False)
    assert "UsePAM yes" in (b.state_dir / "sshd_config").read_text()
    with LabSSH(b.ssh_endpoint()) as ssh:
        assert ssh.run("id -u").stdout.strip() == "0"
