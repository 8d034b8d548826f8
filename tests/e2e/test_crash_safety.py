"""Crash safety: `kill -9` of the harness in the middle of `invoke up` (while the network is
being made, and while Ansible provisions), then `invoke down` leaves nothing: no namespace, no
process (sshd, SSH masters, Ansible, tshark/dumpcap, responder), no file, no rule; the root
namespace is as it was.  (Mid-demo is in test_demo.py.)  And many demos in a row leave no
capture process and no growth in the harness's open file descriptors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, new_prefix, require_lab_machine, root_ns_state

pytestmark = pytest.mark.e2e

#: Demos in a row in the default suite (~5 s each here); `invoke fuzz --soak 100` runs 100.
SOAK = int(os.environ.get("TCPLAB_SOAK", "5"))


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines() if l.strip()}


def ns_pids(*names: str) -> set[int]:
    pids: set[int] = set()
    for ns in names:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids |= {int(p) for p in out.split() if p.isdigit()}
    return pids


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds nothing; init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()[:120]
    except OSError:
        return b"(gone)"


def _ansible_running(backend) -> bool:
    from harness.util import pids_mentioning
    for pid in pids_mentioning(str(backend.state_dir) + "/"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ansible" in f.read():
                    return True
        except OSError:
            pass
    return False


STAGES = {
    # the namespaces exist, sshd may be starting
    "network": lambda b: {b.host_ns, b.vm_ns} <= namespaces(),
    # sshd is up and Ansible is provisioning over SSH (ControlPersist masters alive)
    "provisioning": _ansible_running,
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kill_9_mid_up_then_down_leaves_nothing(stage):
    from harness.lab import get_backend
    from harness.util import pids_mentioning
    require_lab_machine()
    b = get_backend("netns", new_prefix("rel"))
    before = root_ns_state()
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "up", "--prefix", b.prefix],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not STAGES[stage](b):
            assert proc.poll() is None, f"`invoke up` ended (exit {proc.returncode}) " \
                                        f"before the {stage} stage was seen"
            assert time.monotonic() < deadline, f"the {stage} stage never came"
            time.sleep(0.02)
        seen |= ns_pids(b.host_ns, b.vm_ns) | set(pids_mentioning(str(b.state_dir) + "/"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seen |= ns_pids(b.host_ns, b.vm_ns) | set(pids_mentioning(str(b.state_dir) + "/"))
        r = subprocess.run([sys.executable, "-m", "invoke", "down", "--prefix", b.prefix],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    alive = {p: cmdline(p) for p in seen if running(p)}
    assert not alive, f"processes left after down: {alive}"
    assert not pids_mentioning(str(b.state_dir) + "/")
    assert not ({b.host_ns, b.vm_ns} & namespaces())
    assert not b.state_dir.exists(), list(b.state_dir.rglob("*"))[:20]
    assert not (b.state_dir.parent / f"{b.prefix}.lock").exists()
    assert not any(p.name.startswith(b.prefix) for p in os.scandir("/run/netns")) \
        if os.path.isdir("/run/netns") else True
    assert root_ns_state() == before, "the root namespace changed"


def test_many_demos_in_a_row_leave_no_capture_and_no_open_files(tmp_path):
    """SOAK demos in this process on one lab: each matches, no tshark/dumpcap of the lab
    survives a demo, and the open file descriptors do not grow."""
    from harness.stress.soak import soak
    require_lab_machine()
    res = soak(SOAK, new_prefix("rel"), runs_dir=tmp_path)
    assert not res["failures"], res["failures"]
    assert not res["leftover_captures"], res["leftover_captures"]
    assert res["fd_growth"] <= 0, f"open fds after each demo: {res['open_fds']}"
    assert len(res["open_fds"]) == SOAK
