"""The clients a scenario can drive from the lab's host side.

* ``nc`` -- the real netcat; its stdin is the scenario's ``stdin`` or the ``send``/``sleep``
  steps of its ``script``, written with the pauses in between.
* ``python`` -- a socket client with socket options (``--nodelay``: TCP_NODELAY, Nagle off;
  ``--no-quickack``: TCP_QUICKACK off after connecting and after every read, so Linux delays its
  ACKs; ``--mss N``: TCP_MAXSEG before connecting, so one write becomes several segments), steps ``send``, ``sleep``, ``recv N``, ``recv-all``, ``shutdown``, ``close``.
* ``scapy`` -- a peer whose every segment is crafted with Scapy (for what no kernel sends: an
  in-window RST, a SYN in the middle of a connection, a FIN that does not ACK the peer's FIN).
  It ACKs data at once (``--delayed-ack``: 80 ms later, and its data does not piggyback a newer
  ACK), never a FIN unless told (``ack``); steps ``connect``, ``send``, ``recv
  N``, ``wait-fin``, ``fin``, ``ack``, ``rst N`` (RST at our SND.NXT + N: N > 0 is in the
  window but not exact), ``syn N``, ``syn-badsum`` (the SYN ``connect`` will send, with a
  wrong TCP checksum), ``sleep``.  The host kernel knows nothing of its connection
  and would reset it, so while it runs the harness keeps an iptables rule on the lab's host
  side that drops the host kernel's RSTs on exactly the peer's connection
  (:func:`harness.lab.firewall.peer_rst_rule`: out of the capture interface, from 192.168.56.1
  and the peer's port to the VM's lab port, unless marked by the peer; tagged with the lab's
  name).  On the netns and qemu backends that side is the lab's host namespace; on a backend
  whose host side is this machine (VirtualBox) it is this machine's OUTPUT chain, so the peer
  runs there only where the harness is root on Linux (:func:`scapy_unavailable` says why not
  otherwise), and ``down`` removes a rule a killed run left (found by its tag).

The Python and Scapy clients run as ``python -m harness.run.clients KIND ...`` on the lab's host
side (the backend's ``host_python_argv``: inside the lab's host namespace, here or on a lab
host), and print one JSON line: what they received, a log of their steps and any error.
:func:`run_client` hides all three behind one call, and :func:`run_clients` runs a scenario's ``clients: N`` copies of it at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from harness.judge.scenario import NC_PATH, Step
from harness.lab.firewall import PEER_MARK, Firewall, on_host_side, peer_rst_rule
from harness.util import PROJECT_ROOT, LabError

SO_MARK = getattr(socket, "SO_MARK", 36)
#: ``scapy --delayed-ack``: how long the peer sits on an ACK.  Between Linux's 40 ms and BSD's
#: 200 ms, and shorter than the responder's own 200 ms, so that the two timers never race.
SCAPY_DELAYED_ACK = 0.08


@dataclass
class ClientRun:
    """What the client did: its output, error text, exit status (None: stopped by us), and
    whether it was still running when a ``hold`` ran out."""

    argv: list
    stdout: bytes = b""
    stderr: bytes = b""
    status: int | None = None
    held: bool | None = None
    report: dict | None = None        # the python/scapy client's JSON line
    seconds: float = 0.0

    @property
    def received(self) -> bytes:
        if self.report is not None:
            return bytes.fromhex(self.report.get("received", ""))
        return self.stdout

    def to_dict(self) -> dict:
        """For result.json."""
        return {"argv": self.argv, "status": self.status, "held": self.held,
                "seconds": round(self.seconds, 3), "report": self.report,
                "received_bytes": len(self.received),
                "stderr": self.stderr.decode(errors="replace")[-2000:]}


def steps_to_json(steps) -> str:
    return json.dumps([[s.kind, s.arg.hex() if isinstance(s.arg, bytes) else s.arg]
                       for s in steps])


def steps_from_json(text: str) -> list:
    return [Step(k, bytes.fromhex(a) if k == "send" else a) for k, a in json.loads(text)]


def scapy_unavailable(backend) -> str | None:
    """Why the Scapy peer cannot run on ``backend`` (None: it can).  With a lab host namespace
    it always can (here or on a lab host); where the host side is this machine, its RST rule
    goes into this machine's iptables, which needs root on Linux."""
    if backend.host_side_isolated:
        return None
    if platform.system() != "Linux":
        return (f"the Scapy peer needs an iptables rule on this host (the host side of a "
                f"{backend.name} lab), and this is {platform.system()}, not Linux")
    if os.geteuid() != 0:
        return ("the Scapy peer needs an iptables rule on this host (the host side of a "
                f"{backend.name} lab) and raw sockets: run as root (sudo)")
    if shutil.which("iptables") is None:
        return "the Scapy peer needs iptables on this host (Debian/Ubuntu: apt install iptables)"
    return None


def new_peer_port() -> int:
    """A source port for one Scapy peer (each copy of a ``clients: N`` run its own)."""
    return random.randint(40000, 60000)


def peer_rule(backend, sport: int, port: int):
    """The host side's RST block for a Scapy peer on ``sport``: scoped to the lab's capture
    interface and addresses, tagged with the lab's name."""
    return peer_rst_rule(backend.host_ip, sport, backend.vm_ip, port,
                         interface=backend.capture_interface, lab=backend.prefix)


def client_argv(backend, scn, port: int, sport: int | None = None, *,
                wrapped: bool = True) -> list:
    """The command line that runs the scenario's client on the host side, through the
    backend's :meth:`host_argv` (``sport``: the Scapy peer's source port, chosen here when not
    given; ``wrapped=False``: the client's own command, to show)."""
    if scn.client == "nc":
        argv = [NC_PATH, *scn.client_args, backend.vm_ip, str(port)]
        return backend.host_argv(argv) if wrapped else argv
    extra = []
    if scn.client == "scapy":
        why = scapy_unavailable(backend)
        if why:
            raise LabError(why)
        extra = ["--src", backend.host_ip, "--sport", str(sport or new_peer_port())]
    args = [scn.client, "--host", backend.vm_ip, "--port", str(port),
            "--script", steps_to_json(scn.script), *extra, *scn.client_args]
    if wrapped:
        return backend.host_python_argv("harness.run.clients", args)
    return ["python3", "-m", "harness.run.clients", *args]


def run_clients(backend, scn, port: int, timeout: float) -> list[ClientRun]:
    """The scenario's ``clients: N`` copies of its client, started together, each on its own
    connection (each its own process, so its own source port); results in start order."""
    if scn.clients == 1:
        return [run_client(backend, scn, port, timeout)]
    results: list = [None] * scn.clients

    def one(i: int) -> None:
        results[i] = run_client(backend, scn, port, timeout)
    threads = [threading.Thread(target=one, args=(i,), name=f"tcplab-client-{i + 1}")
               for i in range(scn.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [i + 1 for i, r in enumerate(results) if r is None]
    if missing:
        raise LabError(f"client(s) {missing} of {scn.clients} could not be run")
    return results


def run_client(backend, scn, port: int, timeout: float) -> ClientRun:
    """Run the scenario's client to its end (or until ``hold``/``timeout``); a Scapy peer with
    its RST rule on the host side, removed when it ends (also when it had to be killed)."""
    if scn.client != "scapy":
        return _run_client(backend, scn, client_argv(backend, scn, port), timeout)
    sport = new_peer_port()
    argv = client_argv(backend, scn, port, sport)
    with Firewall(on_host_side(backend)).applied([peer_rule(backend, sport, port)], first=True):
        return _run_client(backend, scn, argv, timeout)


def _run_client(backend, scn, argv: list, timeout: float) -> ClientRun:
    run = ClientRun(argv)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    out: dict = {}
    done = threading.Event()                  # the run is over: the feeder stops sleeping
    threads = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()),
                                daemon=True) for k, f in (("out", proc.stdout),
                                                          ("err", proc.stderr))]
    if scn.client == "nc":
        threads.append(threading.Thread(target=_feed_nc, args=(proc, scn, done), daemon=True))
    else:
        proc.stdin.close()
    for t in threads:
        t.start()
    try:
        limit = scn.hold if scn.hold is not None else timeout
        try:
            run.status = proc.wait(timeout=max(0.0, min(limit, timeout)))
            run.held = False
        except subprocess.TimeoutExpired:
            run.held = True
    finally:
        done.set()
        _end(proc, threads)
    run.seconds = time.monotonic() - t0
    run.stdout, run.stderr = out.get("out", b""), out.get("err", b"")
    if scn.client != "nc":
        run.report = _report(run.stdout)
    if run.held and scn.hold is None:
        run.stderr += (f"\ntcplab: the client did not finish within {timeout:g} s; it was "
                       f"stopped").encode()
    return run


def _end(proc, threads) -> None:
    """Kill the client if it still runs, reap it, let the readers finish, close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None and not f.closed:
            try:
                f.close()
            except OSError:
                pass


def _report(stdout: bytes) -> dict | None:
    """The python/scapy client's JSON line (its last line starting with ``{``)."""
    lines = [line for line in stdout.splitlines() if line.startswith(b"{")]
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except ValueError:
        return None


def _feed_nc(proc, scn, done: threading.Event) -> None:
    """nc's stdin: the scenario's ``stdin``, or its script's sends with the sleeps between
    them; stops at once when the run is over (``done``)."""
    try:
        if scn.script:
            for step in scn.script:
                if step.kind == "send":
                    proc.stdin.write(step.arg)
                    proc.stdin.flush()
                elif step.kind == "sleep" and done.wait(step.arg):
                    return
        else:
            proc.stdin.write(scn.stdin)
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass          # nc has gone (or was stopped): nothing more to feed


# ------------------------------------------------------------------ inside the host namespace

def python_client(host: str, port: int, steps, nodelay: bool, no_quickack: bool,
                  timeout: float = 30.0, mss: int | None = None) -> dict:
    log, received = [], bytearray()
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if mss:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)   # our SYN's MSS option
    s.connect((host, port))

    def quickack_off():
        if no_quickack:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quickack_off()
    closed = False
    for step in steps:
        log.append([round(time.monotonic() - t0, 6), str(step)])
        if step.kind == "send":
            s.sendall(step.arg)
        elif step.kind == "sleep":
            time.sleep(step.arg)
        elif step.kind in ("recv", "recv-all"):
            want = len(received) + step.arg if step.kind == "recv" else None
            while want is None or len(received) < want:
                chunk = s.recv(65536 if want is None else want - len(received))
                quickack_off()
                if not chunk:
                    break
                received += chunk
        elif step.kind == "shutdown":
            s.shutdown(socket.SHUT_WR)
        elif step.kind == "close":
            s.close()
            closed = True
    if not closed:
        s.close()
    return {"ok": True, "received": bytes(received).hex(), "log": log}


class ScapyPeer:
    """A hand-made TCP peer: every packet built by Scapy, sent on a raw socket."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, delayed_ack: float = 0.0,
                 src: str | None = None, sport: int | None = None):
        # Import early (it is slow), and only the layers the peer uses: scapy.all loads every
        # layer, ~4x the time (1.6 vs 0.4 s here, 6-12 vs 4-5 s on an emulated lab host).
        from scapy.layers.inet import IP  # noqa: F401
        self.dst, self.dport = host, port
        self.sport = sport or new_peer_port()
        self.src = src or _source_address(host)
        self.timeout = timeout
        self.iss = random.getrandbits(32)
        self.snd_nxt = self.iss
        self.rcv_nxt = None
        self.fin_seq = None
        self.received = bytearray()
        self.consumed = 0                 # bytes that earlier ``recv`` steps waited for
        self.delayed_ack = delayed_ack    # > 0: ACK data this much later, not at once
        self.ack_sent = None              # what our data segments acknowledge (delayed mode)
        self.ack_timer = None
        self.cond = threading.Condition()
        self.stop = False
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.rx.settimeout(0.1)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        # The host kernel's RSTs on our connection are dropped by the harness's rule
        # (peer_rule); ours pass, marked.
        self.tx.setsockopt(socket.SOL_SOCKET, SO_MARK, PEER_MARK)

    def __enter__(self):
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=2)
        if self.ack_timer is not None:
            self.ack_timer.cancel()
        self.rx.close()
        self.tx.close()

    def send(self, flags: str, seq: int | None = None, ack: int | None = None,
             payload: bytes = b"", options=(), bad_checksum: bool = False) -> None:
        from scapy.layers.inet import IP, TCP
        from scapy.packet import Raw
        if ack is None:
            # with delayed ACKs our data carries only what we ACKed before: a delayed-ACK
            # peer must not ACK sooner by piggybacking (the lesson is the wait)
            ack = self.ack_sent if self.delayed_ack and payload else self.rcv_nxt
        ack = (ack or 0) & 0xFFFFFFFF
        if "A" in flags:
            self.ack_sent = ack
        tcp = TCP(sport=self.sport, dport=self.dport, flags=flags, window=65535,
                  seq=self.snd_nxt if seq is None else seq & 0xFFFFFFFF, ack=ack,
                  options=list(options))
        pkt = IP(src=self.src, dst=self.dst) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        wire = bytearray(bytes(pkt))
        if bad_checksum:
            wire[20 + 16] ^= 0xFF            # the TCP checksum's first byte, after a 20-byte IP
        self.tx.sendto(bytes(wire), (self.dst, 0))

    def _receive(self) -> None:
        from scapy.layers.inet import IP, TCP
        while not self.stop:
            try:
                data = self.rx.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            ip = IP(data)
            if TCP not in ip or ip[TCP].sport != self.dport or ip[TCP].dport != self.sport:
                continue
            t = ip[TCP]
            payload = bytes(t.payload)
            with self.cond:
                if "S" in t.flags and "A" in t.flags:
                    self.rcv_nxt = (t.seq + 1) & 0xFFFFFFFF
                elif payload and self.rcv_nxt is not None and t.seq == self.rcv_nxt:
                    self.received += payload
                    self.rcv_nxt = (self.rcv_nxt + len(payload)) & 0xFFFFFFFF
                    if not self.delayed_ack:
                        self.send("A")              # data is ACKed at once
                    elif self.ack_timer is None:
                        self.ack_timer = threading.Timer(self.delayed_ack, self._ack_later)
                        self.ack_timer.start()
                if "F" in t.flags and self.fin_seq is None:
                    self.fin_seq = (t.seq + len(payload)) & 0xFFFFFFFF
                self.cond.notify_all()

    def _ack_later(self) -> None:
        with self.cond:
            self.ack_timer = None
            if self.ack_sent != self.rcv_nxt:
                self.send("A")

    def wait(self, what: str, pred) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, timeout=self.timeout):
                raise TimeoutError(f"scapy peer: no {what} within {self.timeout:g} s")

    def run(self, step: Step) -> None:
        """One step.  Sending and the receiver's ACKs hold the same lock, so an ACK never
        carries a SND.NXT that the segment before it has not yet used."""
        if step.kind in ("sleep", "recv", "wait-fin"):
            self._step(step)
        else:
            with self.cond:
                self._step(step)

    def _step(self, step: Step) -> None:
        k = step.kind
        if k in ("fin", "ack") and self.ack_timer is not None:
            self.ack_timer.cancel()                 # this segment ACKs everything anyway
            self.ack_timer = None
        if k == "connect":
            self.send("S", options=[("MSS", 1460)])
            self.snd_nxt = (self.iss + 1) & 0xFFFFFFFF
            self.wait("SYN,ACK", lambda: self.rcv_nxt is not None)
            self.send("A")
        elif k == "send":
            self.send("PA", payload=step.arg)
            self.snd_nxt = (self.snd_nxt + len(step.arg)) & 0xFFFFFFFF
        elif k == "sleep":
            time.sleep(step.arg)
        elif k == "recv":
            self.consumed += step.arg
            n = self.consumed
            self.wait(f"{step.arg} bytes of data", lambda: len(self.received) >= n)
        elif k == "wait-fin":
            self.wait("FIN", lambda: self.fin_seq is not None)
        elif k == "fin":                                   # ACKs data, not a FIN we got
            self.send("FA")
            self.snd_nxt = (self.snd_nxt + 1) & 0xFFFFFFFF
        elif k == "ack":
            fin = self.fin_seq is not None and self.fin_seq == self.rcv_nxt
            self.send("A", ack=(self.rcv_nxt + (1 if fin else 0)))
        elif k == "rst":
            self.send("R", seq=self.snd_nxt + step.arg, ack=0)
        elif k == "syn":
            self.send("S", seq=self.snd_nxt + step.arg, ack=0, options=[("MSS", 1460)])
        elif k == "syn-badsum":           # our SYN with a wrong TCP checksum; `connect` next
            self.send("S", options=[("MSS", 1460)], bad_checksum=True)   # sends it intact


def scapy_client(host: str, port: int, steps, timeout: float = 10.0,
                 delayed_ack: float = 0.0, src: str | None = None,
                 sport: int | None = None) -> dict:
    log = []
    t0 = time.monotonic()
    with ScapyPeer(host, port, timeout, delayed_ack, src, sport) as peer:
        for step in steps:
            log.append([round(time.monotonic() - t0, 6), str(step)])
            peer.run(step)
        time.sleep(0.2)          # let the last answers arrive before the rule goes
        return {"ok": True, "received": bytes(peer.received).hex(), "log": log,
                "sport": peer.sport}


def _source_address(dst: str) -> str:
    """The address this namespace uses towards ``dst``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return s.getsockname()[0]
    finally:
        s.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.run.clients")
    p.add_argument("kind", choices=("python", "scapy"))
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--script", default="[]", help="steps as JSON (steps_to_json)")
    p.add_argument("--nodelay", action="store_true")
    p.add_argument("--no-quickack", action="store_true")
    p.add_argument("--delayed-ack", action="store_true")
    p.add_argument("--mss", type=int)
    p.add_argument("--src", help="scapy: our address (default: the route's)")
    p.add_argument("--sport", type=int, help="scapy: our port (the harness's RST rule names it)")
    opts = p.parse_args(argv)
    steps = steps_from_json(opts.script)
    try:
        if opts.kind == "python":
            res = python_client(opts.host, opts.port, steps, opts.nodelay, opts.no_quickack,
                                mss=opts.mss)
        else:
            res = scapy_client(opts.host, opts.port, steps,
                               delayed_ack=SCAPY_DELAYED_ACK if opts.delayed_ack else 0.0,
                               src=opts.src, sport=opts.sport)
    except (OSError, TimeoutError, LabError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
