"""The machine the harness runs on (as root) stays as it was: the root network namespace
(addresses, routes, links, iptables, nft) and the host's SSH files are identical
after every step of a lab's life, and the harness refuses names and paths that would make it
act on something that is not its lab."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, new_prefix, require_lab_machine, root_ns_state

pytestmark = pytest.mark.e2e


def invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def listing(d: Path) -> list | str:
    """Every file under ``d`` with its size and modification time (or "absent")."""
    if not d.exists():
        return "absent"
    out = []
    for p in sorted(d.rglob("*")):
        try:
            st = p.lstat()
        except OSError:
            continue
        out.append((str(p.relative_to(d)), st.st_size, st.st_mtime_ns))
    return out


def host_state() -> dict:
    s = root_ns_state()
    home = Path(os.environ.get("HOME", "/root"))
    # Not ~/.ansible: other Ansible runs on the machine (ansible-lint, other labs' tests) use
    # it; the lab's Ansible home, temp files and SSH control sockets are in its state directory.
    for name, d in (("home_ssh", home / ".ssh"), ("etc_ssh", Path("/etc/ssh")),
                    ("etc_netns", Path("/etc/netns"))):
        s[name] = listing(d)
    return s


def changes(before: dict, after: dict) -> dict:
    return {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}


def scenarios() -> list[str]:
    return sorted(p.stem for p in (ROOT / "scenarios").glob("*.scn"))


def test_up_demo_every_scenario_and_down_leave_the_host_as_it_was(tmp_path):
    """`invoke up`, `invoke demo`, then every scenario in scenarios/ (in this process, through
    the function `invoke demo` calls, to save a process start per scenario), `invoke down`:
    the host is compared with its first state after every step.  A scenario's verdict is not
    judged here (the scenario tests do that), only what it leaves on the host."""
    from harness.run.demo import run_demo
    from harness.lab import get_backend
    require_lab_machine()
    prefix = new_prefix("rel")
    before = host_state()
    done = []

    def check(step: str) -> None:
        diff = changes(before, host_state())
        assert not diff, f"after {step} the host changed: {diff}"
        done.append(step)

    try:
        r = invoke("up", "--prefix", prefix)
        assert r.returncode == 0, f"invoke up: {r.stderr[-1500:]}"
        check("invoke up")
        r = invoke("demo", "--prefix", prefix)
        check(f"invoke demo (exit {r.returncode})")
        backend = get_backend("netns", prefix)
        for name in scenarios():
            res = run_demo(backend, name, runs_dir=tmp_path)
            check(f"scenario {name} ({'match' if res.ok else 'mismatch'})")
        r = invoke("down", "--prefix", prefix)
        assert r.returncode == 0, f"invoke down: {r.stderr[-1500:]}"
        check("invoke down")
    finally:
        invoke("down", "--prefix", prefix)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in names
    assert len(done) == len(scenarios()) + 3, done


@pytest.mark.parametrize("root, prefix", [("/", "etc"), ("/", "usr"), ("/usr", "lib"),
                                          ("/var", "lib"), ("/", "root")])
def test_a_state_root_that_makes_the_state_dir_a_system_directory_is_refused(
        monkeypatch, root, prefix):
    """`invoke down` removes the state directory and kills every process that mentions it;
    with TCPLAB_STATE_ROOT=/ and --prefix etc that would be /etc.  Only checked, never run."""
    from harness.lab import get_backend
    from harness.util import LabError
    monkeypatch.setenv("TCPLAB_STATE_ROOT", root)
    with pytest.raises(LabError):
        b = get_backend("netns", prefix)
        raise AssertionError(f"accepted: the lab's state directory would be {b.state_dir}")


def test_down_leaves_alone_a_namespace_tcplab_did_not_make():
    """`ip netns` names are global and chosen by anyone: `invoke down --prefix work` must not
    kill what runs in someone's own namespace `work-vm` and delete it (as `up` already refuses
    to take it over)."""
    require_lab_machine()
    prefix = new_prefix("rel")
    ns = f"{prefix}-vm"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
    try:
        time.sleep(0.2)
        r = invoke("down", "--prefix", prefix)
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        alive = sleeper.poll() is None
        assert ns in names and alive, (f"`invoke down --prefix {prefix}` (exit {r.returncode}) "
                                       f"removed namespace {ns} or killed its process "
                                       f"(namespace there: {ns in names}, process alive: {alive})")
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_bench_floor_measures_only_namespaces_it_makes():
    """The bench's bare-`ip` reference makes <p>f-host and <p>f-vm and deletes them; when one
    of those names is someone else's namespace it refuses, and deletes nothing (it used to
    delete both names in `finally`, whoever had made them)."""
    from bench.lab import netns_floor
    from harness.util import LabError
    require_lab_machine()
    prefix = new_prefix("bfl")
    names = lambda: set(subprocess.run(["ip", "netns", "list"], capture_output=True,  # noqa
                                       text=True).stdout.split())
    res = netns_floor(prefix)
    assert res["up_s"] > 0 and res["down_s"] > 0
    assert not {f"{prefix}f-host", f"{prefix}f-vm"} & names()
    subprocess.run(["ip", "netns", "add", f"{prefix}f-vm"], check=True)
    try:
        with pytest.raises(LabError, match="exist already"):
            netns_floor(prefix)
        assert f"{prefix}f-vm" in names(), "the bench deleted a namespace it did not make"
        assert f"{prefix}f-host" not in names()
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}f-vm"], capture_output=True)
