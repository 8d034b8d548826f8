"""tcplab's resume agent: runs *in the guest* of a qemu lab's snapshot (copied there when the
snapshot is made, :mod:`harness.lab.snapshot`), on the guest's python3, standard library only.

It waits on the virtio-serial port ``org.tcplab.agent`` (a unix socket in the lab's state
directory on the host, so only root there can talk to it) for one JSON request per line and
answers one JSON line:

* ``{"op": "prepare"}`` -- before the snapshot is saved: stop sshd and end every SSH session,
  so the saved guest has no network identity that answers and no session anyone could resume;
* ``{"op": "rotate", "time": T, "seed": HEX, "host_key": ..., "host_key_pub": ...,
  "authorized_keys": ...}`` -- after a lab resumed the snapshot: the clock set to the host's,
  the host's random bytes mixed into the guest's pool, the lab's own SSH host key and root's
  authorized key written, then sshd started: the first connection already meets the lab's
  host key, so known_hosts is strict from it.  The agent then exits (once per resume).

Nothing reaches it from the network.  The host connects to the socket only when it has
something to say; while nobody is connected the port reads as end-of-file, and the agent
looks again five times a second.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

PORT = "/dev/virtio-ports/org.tcplab.agent"
IDLE_S = 0.2


def end_ssh_sessions():
    """SIGKILL every sshd session process ("sshd: root@notty", "sshd: root [priv]")."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"sshd: "):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def write(path, text, mode):
    tmp = path + ".tcplab-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def systemctl(*args):
    res = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"systemctl {' '.join(args)}: {res.stderr.strip()}")


def prepare(_req):
    systemctl("stop", "ssh.service")
    end_ssh_sessions()
    os.sync()
    return {"ok": True}


def rotate(req):
    before = time.time()
    time.clock_settime(time.CLOCK_REALTIME, float(req["time"]))
    with open("/dev/urandom", "wb") as f:          # mixed into the pool (not credited)
        f.write(bytes.fromhex(req["seed"]))
    end_ssh_sessions()
    os.makedirs("/root/.ssh", mode=0o700, exist_ok=True)
    write("/etc/ssh/ssh_host_ed25519_key", req["host_key"], 0o600)
    write("/etc/ssh/ssh_host_ed25519_key.pub", req["host_key_pub"], 0o644)
    write("/root/.ssh/authorized_keys", req["authorized_keys"], 0o600)
    systemctl("start", "ssh.service")
    with open("/etc/ssh/ssh_host_ed25519_key.pub") as f:
        pub = f.read().strip()
    return {"ok": True, "host_key_pub": pub, "clock_was_behind_s": round(req["time"] - before, 3)}


OPS = {"prepare": (prepare, False), "rotate": (rotate, True)}


def serve(fd):
    buf = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(1000):
            continue
        data = os.read(fd, 65536)
        if not data:                      # nobody connected on the host side
            time.sleep(IDLE_S)
            continue
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            done = False
            try:
                req = json.loads(line)
                fn, done = OPS[req["op"]]
                reply = fn(req)
            except Exception as e:        # noqa: BLE001 -- every failure is the host's answer
                reply, done = {"ok": False, "error": f"{type(e).__name__}: {e}"}, False
            os.write(fd, json.dumps(reply).encode() + b"\n")
            if done:
                return


def main():
    fd = os.open(PORT, os.O_RDWR)
    try:
        serve(fd)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
