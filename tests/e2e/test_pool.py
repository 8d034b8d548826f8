"""End-to-end: many labs as one operation, and the pool that leases them.

Every test works in a state root of its own (``/run/tcplab-<tag><hex>``), so ``down --all``
and ``status --all`` see only its labs, never other people's; everything is removed in
``finally``.  Real namespaces, real sshd, one real Ansible run, real responders and captures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, new_prefix, require_lab_machine

pytestmark = pytest.mark.e2e
INVOKE = [sys.executable, "-m", "invoke"]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines() if l.strip()}


@pytest.fixture
def own_root(monkeypatch):
    """A state root for this test alone, removed (with every lab in it) afterwards."""
    require_lab_machine()
    root = Path(f"/run/tcplab-pool{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(root))
    env = dict(os.environ, TCPLAB_STATE_ROOT=str(root))
    try:
        yield root, env
    finally:
        subprocess.run(INVOKE + ["down", "--all"], cwd=ROOT, env=env, capture_output=True,
                       timeout=300)
        shutil.rmtree(root, ignore_errors=True)


def invoke(env, *args, timeout=600):
    return subprocess.run(INVOKE + list(args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_up_labs_8_is_one_playbook_run_and_down_all_leaves_nothing(own_root):
    from harness.util import pids_mentioning
    root, env = own_root
    base = new_prefix("m")[:7]
    names = [f"{base}{i}" for i in range(1, 9)]
    r = invoke(env, "up", "--labs", "8", "--prefix", base, "--verbose")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stderr.count("PLAY RECAP") == 1, "more than one playbook run"
    assert r.stderr.count("provisioning with Ansible: provision/site.yml (8 labs, one run)") == 1
    recap = [l for l in r.stderr.splitlines() if l.split(" ")[0] in names and "changed=" in l]
    assert sorted(l.split()[0] for l in recap) == sorted(names), recap
    assert all("failed=0" in l and "unreachable=0" in l for l in recap)
    for name in names:
        assert f"lab '{name}' is up; provisioning changed 3 thing(s)" in r.stdout, r.stdout
    rows = json.loads(invoke(env, "status", "--all", "--json").stdout)
    assert sorted(row["prefix"] for row in rows) == sorted(names)
    assert all(row["up"] and row["ssh"] and row["provisioned"] for row in rows), rows

    again = invoke(env, "up", "--labs", "8", "--prefix", base)      # idempotent, one run again
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("provisioning changed 0 thing(s)") == 8, again.stdout

    down = invoke(env, "down", "--all")
    assert down.returncode == 0 and "removed 8 lab(s)" in down.stdout, down.stdout + down.stderr
    time.sleep(0.2)
    assert not {f"{n}-{side}" for n in names for side in ("host", "vm")} & namespaces()
    assert not pids_mentioning(str(root) + "/")
    assert list(root.iterdir()) == []


def test_one_lab_that_cannot_be_made_is_named_and_the_others_are_made(own_root):
    """--prefixes a,b,c where b's namespace is someone else's: b fails at `up` with the reason,
    a and c are up and provisioned, the foreign namespace is untouched; exit 1."""
    root, env = own_root
    a, b, c = (new_prefix(t) for t in ("fa", "fb", "fc"))
    subprocess.run(["ip", "netns", "add", f"{b}-host"], check=True)
    try:
        r = invoke(env, "up", "--prefixes", f"{a},{b},{c}")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"lab '{b}' FAILED at up" in r.stdout and "not made by tcplab" in r.stdout
        assert f"lab '{a}' is up" in r.stdout and f"lab '{c}' is up" in r.stdout
        assert "1 of 3 lab(s) failed: " + b in r.stderr
        assert f"{b}-host" in namespaces() and f"{b}-vm" not in namespaces()
        rows = {row["prefix"]: row for row in json.loads(
            invoke(env, "status", "--all", "--json").stdout)}
        assert set(rows) == {a, c} and all(rows[p]["provisioned"] for p in (a, c))
    finally:
        subprocess.run(["ip", "netns", "del", f"{b}-host"], capture_output=True)


def test_one_playbook_run_reports_each_failed_lab_and_provisions_the_rest(own_root):
    """provision_many over three labs: one whose sshd is gone (unreachable), one where a task
    fails (its responder directory is a file); the third is provisioned all the same."""
    import signal
    from harness.lab import get_backend
    from harness.lab.provision import provision_many
    labs = [get_backend("netns", new_prefix(t)) for t in ("pa", "pb", "pc")]
    try:
        for lab in labs:
            lab.up()
        os.kill(labs[1].state.live_pid("sshd.pid"), signal.SIGKILL)
        tree = labs[2].state_dir / "vm" / "opt" / "tcplab"
        shutil.rmtree(tree)
        tree.write_text("not a directory")
        res = provision_many(labs, log=lambda m: None)
        good, gone, broken = (res[lab.prefix] for lab in labs)
        assert good.ok and good.recap["changed"] == 3 and labs[0].read_meta()["provisioned_hash"]
        assert not gone.ok and "unreachable" in gone.error and gone.recap["unreachable"] == 1
        assert not broken.ok and broken.recap["failed"] == 1
        assert broken.error.startswith("TASK [tcplab_responder : Create the responder's package "
                                       "directory] failed: ")
        assert "Not a directory" in broken.error and broken.log.exists()
        assert "provisioned_hash" not in labs[2].read_meta()
    finally:
        for lab in labs:
            lab.down()


def _dirty(lab) -> list:
    """Leave what a careless run leaves: a responder still running in the VM, a capture in
    the host namespace, a condition's iptables rule; returns the processes started."""
    from harness.judge.scenario import Condition
    from harness.lab.firewall import Firewall, drop_rules, local
    procs = [subprocess.Popen(lab.vm_exec_prefix() + ["/usr/bin/python3", "-m", "responder",
                                                      "--listen", f"{lab.vm_ip}:80", "--app",
                                                      "hello"], cwd=lab.responder_dir(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(lab.host_exec_prefix() + ["dumpcap", "-q", "-i", "vboxnet0", "-w",
                                                        "/dev/null"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    cond = Condition(kind="drop", text="drop c>s first 1", direction="c>s", count=1)
    for rule in drop_rules(cond, None, lab.host_ip):
        Firewall(local(lab.vm_exec_prefix())).add(rule)
    time.sleep(1.0)                                  # both are up (the responder listens)
    return procs


def test_pool_release_cleans_a_dirty_lab_and_refuses_one_it_cannot_clean(own_root):
    from harness.lab.firewall import Firewall, local, rst_rule
    from harness.lab.pool import LabPool, normalise_save
    from harness.run.demo import run_demo
    root, env = own_root
    lines = []
    from harness.lab.labs import down_all, status_all
    with LabPool(2, tag="pt", log=lines.append) as pool:
        assert len(pool.labs()) == 2
        mine = sorted(b.prefix for b in pool.labs())
        rows = {r["prefix"]: r for r in status_all()}             # status --all shows them
        assert all(rows[p]["up"] and rows[p]["provisioned"] for p in mine), rows
        res = down_all(log=lambda m: None)                       # down --all leaves them:
        assert sorted(res["busy"]) == mine and res["removed"] == []   # the pool holds them
        lab = pool.lease()
        other = pool.lease()
        baseline = subprocess.run(lab.vm_exec_prefix() + ["iptables-save"], capture_output=True,
                                  text=True).stdout
        procs = _dirty(lab)
        c = pool.release(lab)
        assert c.ok and c.found, c.summary()
        assert any("-m responder" in p for p in c.processes), c.processes
        assert any("dumpcap" in p for p in c.processes), c.processes
        assert any("tcplab-condition" in r for r in c.rules), c.rules
        assert c.summary() in lines
        for p in procs:                              # really gone, not just reported
            assert p.wait(timeout=5) is not None
        from harness.lab import net
        assert net.ns_pids(lab.host_ns, lab.vm_ns) == {lab.state.live_pid("sshd.pid")}
        now = subprocess.run(lab.vm_exec_prefix() + ["iptables-save"], capture_output=True,
                             text=True).stdout
        assert normalise_save(now) == normalise_save(baseline)
        assert Firewall(local(lab.vm_exec_prefix())).check(rst_rule()), "the RST rule went"

        again = pool.lease()                         # the cleaned lab comes back, and works
        assert again.prefix == lab.prefix
        res = run_demo(again, "hello", runs_dir=root / "runs")
        assert res.ok, res.summary
        assert pool.release(again).found is False    # a demo leaves its lab clean

        os.kill(other.state.live_pid("sshd.pid"), 9)     # a lab that cannot be made clean
        refused = pool.release(other)
        assert not refused.ok and "its sshd does not answer" in refused.summary()
        assert other.prefix not in [b.prefix for b in pool.labs()]
        assert not other.exists(), "a refused lab the pool made is removed"
        assert pool.lease(timeout=5).prefix == lab.prefix
        made = [b.prefix for b in pool.labs()]
    assert not ({f"{p}-vm" for p in made} & namespaces()), "the pool's labs are removed"


def test_pool_waits_for_a_free_lab_and_makes_labs_on_demand(own_root):
    import threading
    from harness.lab.pool import LabPool
    with LabPool(1, tag="pd", up_front=False, log=lambda m: None) as pool:
        assert pool.labs() == []
        lab = pool.lease()                           # made now
        assert lab.status()["up"] and lab.read_meta()["provisioned_hash"]
        got = []
        t = threading.Thread(target=lambda: got.append(pool.lease(timeout=60).prefix))
        t.start()
        time.sleep(0.5)
        assert got == [], "a second lease got a lab while the only one was leased"
        pool.release(lab)
        t.join(30)
        assert got == [lab.prefix]
        from harness.util import LabError
        with pytest.raises(LabError, match="no lab free in the pool within 0.2 s"):
            pool.lease(timeout=0.2)
    assert not lab.exists()


def test_a_pool_uses_existing_labs_and_keeps_them(own_root):
    from harness.lab import get_backend
    from harness.lab.pool import LabPool
    from harness.lab.provision import bring_up
    existing = get_backend("netns", new_prefix("kp"))
    bring_up(existing)
    with LabPool(1, prefixes=[existing.prefix], log=lambda m: None) as pool:
        with pool.leased() as lab:
            assert lab.prefix == existing.prefix
        with pytest.raises(Exception, match="busy"):     # the pool holds the lab's lock
            with existing.locked():
                pass
    assert existing.status()["up"], "the pool removed a lab it did not make"


@pytest.mark.parametrize("args,message", [
    (["up", "--labs", "99999", "--prefix", "c"], "more lab(s) need ~"),
    (["lessons", "--labs", "99999", "--prefix", "c"], "more lab(s) need ~"),
    (["up", "--labs", "0"], "--labs '0': give a number of labs, 1 or more"),
    (["up", "--labs", "many"], "--labs 'many': give a number of labs"),
    (["lessons", "--labs", "-2"], "--labs '-2': give a number of labs"),
    (["up", "--labs", "50", "--prefix", "abcdefghi"], "not valid lab prefixes"),
    (["up", "--labs", "2", "--prefixes", "a1,a2"], "not both"),
    (["up", "--prefixes", "a1,a1"], "names a1 more than once"),
    (["up", "--prefixes", "ok1,Bad"], "invalid lab prefix 'Bad'"),
])
def test_bad_input_fails_early_in_one_line_and_makes_nothing(own_root, args, message):
    root, env = own_root
    r = invoke(env, *args, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if "need ~" in message:             # the figure and the reason, and what fits
        assert "MB of memory" in r.stderr and "ask for at most" in r.stderr
    assert not root.exists() or [p for p in root.iterdir() if not p.name.endswith(".lock")] \
        == [], list(root.iterdir())


def test_down_all_removes_the_run_directory_a_killed_run_left_but_not_one_in_use(own_root):
    """A playbook run over several labs keeps Ansible's home in <root>/ansible-run-*, locked
    while it lasts: `down --all` removes one whose run was killed (nobody holds its lock) and
    keeps one in use."""
    import fcntl
    from harness.lab.labs import down_all, leftovers
    from harness.lab.provision import RUN_DIR_PREFIX
    from harness.lab.state import trusted_root
    root, env = own_root
    trusted_root(create=True)
    left, busy = root / f"{RUN_DIR_PREFIX}killed", root / f"{RUN_DIR_PREFIX}inuse"
    for d in (left, busy):
        (d / "home").mkdir(parents=True, mode=0o700)
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sorted(leftovers()) == sorted([str(left), str(busy)])
        down_all(log=lambda m: None)
        assert not left.exists() and busy.exists()
    finally:
        os.close(fd)
    down_all(log=lambda m: None)
    assert not busy.exists()
