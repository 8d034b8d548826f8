"""The qemu backend's wiring without a VM: the host side "here" (VirtualBox's shape), the
snapshot's key (what makes a saved guest stale), and the resume agent's protocol against a
socket pair standing in for the virtio-serial port."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from harness.lab import get_backend, snapshot
from harness.lab.qemu import guest_argv
from harness.util import LabError


@pytest.fixture(autouse=True)
def _state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(tmp_path / "tcplab-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for env in ("TCPLAB_QEMU_HOST_SIDE", "TCPLAB_QEMU_SNAPSHOT", snapshot.SNAPSHOTS_ENV):
        monkeypatch.delenv(env, raising=False)


def test_host_side_here_has_no_namespace_no_proxy_and_its_own_tap(monkeypatch):
    b = get_backend("qemu", "q7", host_side="here")
    assert b.host_exec_prefix() == [] and b.host_ns is None and b.namespaces() == []
    assert b.ssh_endpoint().proxy_command is None
    assert b.tap == "q7-tap" and b.capture_interface == "q7-tap"
    monkeypatch.setenv("TCPLAB_QEMU_HOST_SIDE", "here")
    assert get_backend("qemu", "q6").host_exec_prefix() == []
    monkeypatch.setenv("TCPLAB_QEMU_HOST_SIDE", "laptop")
    with pytest.raises(LabError, match="choose namespace .* or here"):
        get_backend("qemu", "q5")


def test_the_record_wins_over_the_environment(monkeypatch):
    """`down` and `status` act on the lab as `up` made it, whatever the shell says now."""
    b = get_backend("qemu", "q4", host_side="here", snapshot=False)
    b.state_dir.mkdir(parents=True)
    b.write_meta(host_side="here", snapshot_mode="off", capture_interface="q4-tap")
    monkeypatch.setenv("TCPLAB_QEMU_HOST_SIDE", "namespace")
    monkeypatch.setenv("TCPLAB_QEMU_SNAPSHOT", "on")
    again = get_backend("qemu", "q4")
    assert again.host_side == "here" and again.snapshot is False
    assert get_backend("qemu", "q3").snapshot is True      # the default: resume
    monkeypatch.setenv("TCPLAB_QEMU_SNAPSHOT", "maybe")
    with pytest.raises(LabError, match="choose on .* or off"):
        get_backend("qemu", "q2")


def _machine(**kw):
    args = dict(name="NAME", img=Path("/img"), accel=["-accel", "tcg"], disk=Path("DISK"),
                run_dir=Path("RUN"), tap="TAP", files=Path("FILES"))
    args.update(kw)
    return guest_argv(**args)[1:]


def test_the_machine_is_the_same_for_every_lab_and_the_resume_reads_the_saved_guest():
    argv = guest_argv(name="tcplab-a", img=Path("/img"), accel=["-accel", "tcg"],
                      disk=Path("/run/tcplab/a/overlay.qcow2"), run_dir=Path("/run/tcplab/a"),
                      tap="vboxnet0", files=Path("/run/tcplab/a"), incoming="exec:cat /s/state.mig")
    assert argv[argv.index("-incoming") + 1] == "exec:cat /s/state.mig"
    assert "vmgenid" in argv and f"name={snapshot.AGENT_PORT}" in " ".join(argv)
    assert "socket,id=agent,path=/run/tcplab/a/agent.sock,server=on,wait=off" in argv
    assert "-incoming" not in _machine()


def test_the_snapshot_key_changes_with_what_the_saved_guest_depends_on(monkeypatch):
    monkeypatch.setattr(snapshot, "qemu_version", lambda q: "QEMU emulator version 7.2.22")
    img = Path("/cache/images/0a396f71419b9b87")
    base = snapshot.key_parts(img, _machine(), "qemu-system-x86_64")
    key = snapshot.snapshot_key(base)
    assert snapshot.snapshot_key(snapshot.key_parts(img, _machine(), "q")) == key
    changed = {
        "image": snapshot.key_parts(Path("/cache/images/ffff"), _machine(), "q"),
        "machine": snapshot.key_parts(img, _machine(accel=["-accel", "kvm"]), "q"),
        "responder": dict(base, responder="0" * 64),
        "playbook": dict(base, provision="1" * 64),
    }
    monkeypatch.setattr(snapshot, "qemu_version", lambda q: "QEMU emulator version 8.2.2")
    changed["qemu"] = snapshot.key_parts(img, _machine(), "q")
    for what, parts in changed.items():
        assert snapshot.snapshot_key(parts) != key, f"a change of {what} kept the key"


def test_the_snapshot_directory_must_be_safe_on_qemus_command_line(monkeypatch):
    monkeypatch.setenv(snapshot.SNAPSHOTS_ENV, "/var/cache/my snapshots")
    with pytest.raises(LabError, match="only letters, digits"):
        snapshot.snapshots_root()
    monkeypatch.setenv(snapshot.SNAPSHOTS_ENV, "/var/cache/tcplab-snap")
    assert snapshot.snapshots_root() == Path("/var/cache/tcplab-snap")


def test_the_agent_answers_each_request_and_ends_after_the_last(monkeypatch):
    """The guest half: the agent's serve() loop on one end of a socket pair (the virtio-serial
    port's stand-in): an unknown request is answered with the error, and the loop goes on;
    a final one is answered, and the loop ends."""
    from harness.lab import resume_agent
    seen = []
    monkeypatch.setitem(resume_agent.OPS, "last", (lambda req: seen.append(req) or
                                                   {"ok": True, "n": len(seen)}, True))
    host, guest = socket.socketpair()
    t = threading.Thread(target=resume_agent.serve, args=(guest.fileno(),), daemon=True)
    t.start()
    reader = host.makefile("rb")
    host.sendall(b'{"op": "nonsense"}\n')
    reply = json.loads(reader.readline())
    assert reply["ok"] is False and "KeyError" in reply["error"]
    host.sendall(b'{"op": "last", "x": 1}\n')
    assert json.loads(reader.readline()) == {"ok": True, "n": 1}
    t.join(timeout=5)
    assert not t.is_alive() and seen == [{"op": "last", "x": 1}]
    host.close()
    guest.close()


def _one_answer(path: Path, answer: bytes):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            got.append(conn.makefile("rb").readline())
            conn.sendall(answer)
        server.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


def test_agent_call_sends_one_line_and_reports_a_refusal(tmp_path):
    t, got = _one_answer(tmp_path / "a.sock", b'{"ok": false, "error": "no ssh.service"}\n')
    with pytest.raises(LabError, match="could not rotate: no ssh.service"):
        snapshot.agent_call(tmp_path / "a.sock", {"op": "rotate", "time": 1.5}, timeout=5)
    t.join(timeout=5)
    assert json.loads(got[0]) == {"op": "rotate", "time": 1.5}
    t, got = _one_answer(tmp_path / "b.sock", b'{"ok": true, "host_key_pub": "k"}\n')
    assert snapshot.agent_call(tmp_path / "b.sock", {"op": "prepare"}, timeout=5)["ok"]
    t.join(timeout=5)


def test_agent_call_gives_up_when_nobody_answers(tmp_path):
    with pytest.raises(LabError, match="did not open within 0.3 s"):
        snapshot.agent_call(tmp_path / "absent.sock", {"op": "rotate"}, timeout=0.3)
    sock = tmp_path / "mute.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(1)
    try:
        with pytest.raises(LabError, match="did not answer 'rotate' within 0.5 s"):
            snapshot.agent_call(sock, {"op": "rotate"}, timeout=0.5)
    finally:
        server.close()


def test_prune_keeps_the_newest_and_any_being_built_or_waited_for(tmp_path, monkeypatch):
    import fcntl
    monkeypatch.setenv(snapshot.SNAPSHOTS_ENV, str(tmp_path / "snaps"))
    snaps = []
    for i, key in enumerate(("a" * 16, "b" * 16, "c" * 16, "d" * 16)):
        sn = snapshot.Snapshot(tmp_path / "snaps" / key)
        sn.dir.mkdir(parents=True)
        for f in (sn.disk, sn.state, sn.meta):
            f.write_text("x")
        os.utime(sn.meta, (1000 + i, 1000 + i))
        snaps.append(sn)
    (tmp_path / "snaps" / ("e" * 16 + ".build")).mkdir()        # a build under way
    with open(snaps[1].dir.with_name(snaps[1].key + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert snapshot.prune(keep=2) == ["a" * 16]            # b is locked: kept
    assert [sn.ready() for sn in snaps] == [False, True, True, True]
    assert (tmp_path / "snaps" / ("e" * 16 + ".build")).is_dir()
    assert snapshot.prune(keep=2) == ["b" * 16]
