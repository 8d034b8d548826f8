"""End-to-end: the demo on a real netns lab — responder in the VM namespace over SSH, real nc,
real tshark capture, pyshark dissection, the matcher's verdict — plus deliberately broken
responders that must make the demo fail naming the field, and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, new_prefix

pytestmark = pytest.mark.e2e

LINES = (b"Hello TCP\n\0", b"Great to meet you!\n\0",
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")


def test_hello_demo_matches(lab, tmp_path):
    from harness.run.demo import run_demo
    res = run_demo(lab, "hello", runs_dir=tmp_path)
    assert res.ok, res.reason
    assert res.client_output == b"".join(LINES)
    for name in ("capture.pcapng", "transcript.txt", "result.json", "responder.log"):
        assert (res.run_dir / name).stat().st_size > 0, name
    result = json.loads((res.run_dir / "result.json").read_text())
    assert result["ok"] is True
    transcript = (res.run_dir / "transcript.txt").read_text()
    assert "192.168.56.100.80 > 192.168.56.1." in transcript and "Flags [S.]" in transcript
    assert "0x0000:  4500" in transcript            # tcpdump -vx hex, as in the lecture
    assert res.counters.get("exit_status") == 0
    log = (res.run_dir / "responder.log").read_text()
    assert "SYN-RECEIVED => ESTABLISHED" in log


@pytest.mark.parametrize("fault,field", [("bad-checksum", "checksum"), ("wrong-seq", "seq")])
def test_broken_responder_fails_naming_the_field(lab, tmp_path, fault, field):
    """The documented fault switch breaks one field; the demo must fail and say which."""
    from harness.run.demo import run_demo
    res = run_demo(lab, "hello", fault=fault, runs_dir=tmp_path)
    assert not res.ok
    assert field in res.reason and "packet" in res.reason, res.reason


def test_invoke_demo_cli_prints_lines_transcript_and_match():
    prefix = new_prefix("demo")
    try:
        r = subprocess.run([sys.executable, "-m", "invoke", "demo", "--prefix", prefix],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert "Hello TCP\n" in r.stdout and "Great to meet you!" in r.stdout
        assert "Nice weather we are having" in r.stdout
        assert "MATCH" in r.stdout
        run_dirs = [l.split(": ", 1)[1] for l in r.stdout.splitlines()
                    if l.startswith("run folder: ")]
        assert run_dirs and (ROOT / run_dirs[0] / "capture.pcapng").exists()
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "down", "--prefix", prefix], cwd=ROOT,
                       capture_output=True, timeout=120)


def test_kill_9_mid_demo_then_down_leaves_nothing(lab):
    """kill -9 of the harness in the middle of a demo; `invoke down` then removes everything:
    namespaces, sshd, responder, tshark/dumpcap, SSH masters, files."""
    from harness.util import pid_alive, pids_mentioning
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "demo", "--prefix", lab.prefix,
                             "--scenario", "hello"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    lab_pids: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        # Wait until the capture runs in the host namespace, then kill the harness mid-demo.
        while time.monotonic() < deadline:
            for ns in (lab.host_ns, lab.vm_ns):
                out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                     text=True).stdout.split()
                lab_pids |= {int(p) for p in out}
            comms = {open(f"/proc/{p}/comm").read().strip() for p in lab_pids if pid_alive(p)}
            if comms & {"tshark", "dumpcap"}:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the demo never started its capture")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    lab_pids |= set(pids_mentioning(str(lab.state_dir) + "/"))
    r = subprocess.run([sys.executable, "-m", "invoke", "down", "--prefix", lab.prefix],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    alive = [p for p in lab_pids if pid_alive(p)]
    assert not alive, f"processes left after down: {alive}"
    assert not lab.state_dir.exists()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.host_ns not in out and lab.vm_ns not in out


def test_eight_demos_at_once_on_eight_labs_get_eight_complete_folders(tmp_path):
    """Issue 16 item 1: demos started in the same second on different labs used to crash with
    FileExistsError (folders were named by the second and the scenario).  8 labs, 8 demos at
    once into one runs folder: 8 distinct, complete folders, each naming its lab."""
    from concurrent.futures import ThreadPoolExecutor

    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    from harness.run.demo import run_demo
    from tests.conftest import require_lab_machine
    require_lab_machine()
    labs = [get_backend("netns", new_prefix("par")) for _ in range(8)]
    runs = tmp_path / "runs"
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda b: bring_up(b), labs))
            results = list(pool.map(lambda b: run_demo(b, "hello", runs_dir=runs), labs))
    finally:
        errors = []
        for b in labs:
            try:
                b.down()
            except Exception as e:          # every lab is removed, whatever one of them says
                errors.append(f"{b.prefix}: {e}")
        assert not errors, errors
    folders = [r.run_dir for r in results]
    assert len(set(folders)) == 8 and sorted(runs.iterdir()) == sorted(folders)
    for lab, res in zip(labs, results):
        assert f"-{lab.prefix}-hello" in res.run_dir.name
        for name in ("capture.pcapng", "transcript.txt", "ladder.svg", "result.json",
                     "responder.log", "client.out"):
            assert (res.run_dir / name).stat().st_size > 0, (res.run_dir, name)
        result = json.loads((res.run_dir / "result.json").read_text())
        assert result["run"]["prefix"] == lab.prefix
        assert res.ok, res.summary
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(b.prefix in out for b in labs)
