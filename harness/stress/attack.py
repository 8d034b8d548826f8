"""Hostile peers for the lab: a SYN flood, a storm of malformed segments, RFC 5961 blind
attacks, and the legitimate clients that must keep being served meanwhile.

Everything here runs *inside the lab's host namespace* (``<prefix>-host``), never in the root
namespace: the functions that take a backend run ``python -m harness.stress.attack ...`` under
``backend.host_exec_prefix()`` and read one JSON object from its stdout.  Spoofed sources are
always inside the lab's 192.168.56.0/24 (refused otherwise), counts are bounded, and every loop
has a deadline.

Packets are built with the responder's own wire layer (``responder.wire.build_packet``, then
RFC 1624 patches per packet), not Scapy: a flood needs ~170,000 packets/s from one process and
Scapy builds ~4,000/s.  They leave through an ``IPPROTO_RAW`` socket, so the kernel writes the
IP total length and checksum: IP-level defects cannot be sent this way (and the VM kernel drops
them before any raw socket sees them anyway; the unit fuzz covers those paths).

    ip netns exec lab-host python -m harness.stress.attack flood --count 100000 [--clients 200]
    ip netns exec lab-host python -m harness.stress.attack storm --per-kind 200 [--nc 5]
    ip netns exec lab-host python -m harness.stress.attack blind
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time

from responder import wire
from responder.wire import ACK, PSH, RST, SYN

from harness.util import PROJECT_ROOT, LabError

LAB_NET = ipaddress.ip_network("192.168.56.0/24")
HOST = "192.168.56.1"
VM = "192.168.56.100"
PORT = 80
#: Flood source ports: below Linux's ephemeral range (32768-60999), so a spoofed SYN never
#: lands on the 4-tuple of a legitimate client's connection.
FLOOD_PORTS = (1024, 32767)
#: A lab address nobody answers ARP for: TCBs made from it stay half-open (their SYN,ACKs go
#: nowhere), so segments can be aimed at them.
GHOST = "192.168.56.77"
MAX_PACKETS = 1_000_000
HELLO = (b"Hello TCP\n\0" b"Great to meet you!\n\0"
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")


def lab_address(addr: str) -> bytes:
    if ipaddress.ip_address(addr) not in LAB_NET:
        raise LabError(f"{addr} is outside the lab network {LAB_NET}: refusing to spoof it")
    return wire.ip_bytes(addr)


def raw_sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def packet(src: str, sport: int, seq: int = 0, ack: int = 0, flags: int = SYN, payload=b"",
           options=wire.NO_OPTIONS, window: int = 64240, dst: str = VM,
           dport: int = PORT) -> bytearray:
    return wire.build_packet(wire.Segment(lab_address(src), lab_address(dst), sport, dport,
                                          seq, ack, flags, window, options=options,
                                          payload=payload, ident=1))


def send_all(sock: socket.socket, packets, dst: str = VM) -> int:
    n = 0
    for p in packets:
        while True:
            try:
                sock.sendto(p, (dst, 0))
                break
            except (BlockingIOError, InterruptedError):
                time.sleep(0.0005)
            except OSError as e:
                if e.errno != 105:          # ENOBUFS: the qdisc is full; let it drain
                    raise
                time.sleep(0.0005)
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# SYN flood
# ---------------------------------------------------------------------------------------------

def flood_packets(count: int, src: str = HOST, seed: int = 1):
    """``count`` SYNs (MSS option) from ``src`` with random ports in :data:`FLOOD_PORTS` and
    random ISNs: one template, then the port and sequence number patched in place with
    RFC 1624 incremental checksum updates."""
    if not 0 < count <= MAX_PACKETS:
        raise LabError(f"flood size {count}: choose 1..{MAX_PACKETS}")
    rnd = random.Random(seed)
    tpl = packet(src, 1024, 0, flags=SYN, options=wire.TcpOptions(mss=1460))
    tcp_csum = 20 + wire.TCP_CHECKSUM
    for _ in range(count):
        wire.patch_u16(tpl, 20 + wire.TCP_SPORT, rnd.randint(*FLOOD_PORTS), tcp_csum)
        wire.patch_u32(tpl, 20 + wire.TCP_SEQ, rnd.getrandbits(32), tcp_csum)
        yield tpl


def _flood_child(count: int, src: str, out) -> None:
    sock = raw_sender()
    t0 = time.monotonic()
    n = send_all(sock, flood_packets(count, src))
    out.send({"sent": n, "seconds": time.monotonic() - t0})
    out.close()


def hello_client(timeout: float = 5.0) -> tuple[bool, float]:
    """One legitimate connection to the hello app: (got exactly the three lines and EOF, s)."""
    t0 = time.monotonic()
    got = b""
    try:
        with socket.create_connection((VM, PORT), timeout=timeout) as c:
            c.shutdown(socket.SHUT_WR)
            while True:
                b = c.recv(4096)
                if not b:
                    break
                got += b
                if time.monotonic() - t0 > timeout:
                    break
    except OSError:
        return False, time.monotonic() - t0
    return got == HELLO, time.monotonic() - t0


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Busy:
    """Is process ``pid`` still busy (>= half a CPU over the last ~0.1 s)?"""

    def __init__(self, pid: int | None, period: float = 0.1):
        self.pid, self.period = pid, period
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t, self.ticks, self.busy = time.monotonic(), self._ticks(), pid is not None

    def _ticks(self) -> int:
        try:
            return cpu_ticks(self.pid) if self.pid else 0
        except OSError:
            return 0

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.pid and now - self.t >= self.period:
            ticks = self._ticks()
            self.busy = (ticks - self.ticks) / self.hz >= 0.5 * (now - self.t)
            self.t, self.ticks = now, ticks
        return self.busy


def flood(count: int, src: str = HOST, clients: int = 0, client_interval: float = 0.005,
          client_timeout: float = 10.0, watch_pid: int | None = None) -> dict:
    """The flood from a child process; meanwhile (if ``clients``) a legitimate hello client is
    started every ``client_interval`` s, each in its own thread, for as long as the flood lasts
    (at most ``clients`` of them).  The flood lasts while it is being sent and, with
    ``watch_pid`` (the responder's PID: the netns lab shares this PID namespace), while the
    responder still works through it (>= half a CPU busy): one raw socket sends 20,000 SYNs in
    ~0.1 s, the responder takes longer to get through them.  Returns sent/rate and the clients'
    completion."""
    import threading
    rx, tx = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_flood_child,
                                                        args=(count, src, tx))
    results: list = []
    threads = []
    busy = Busy(watch_pid)

    def one():
        results.append(hello_client(client_timeout))

    t0 = time.monotonic()
    child.start()
    deadline = t0 + 600
    while (child.is_alive() or busy()) and len(threads) < clients \
            and time.monotonic() < deadline:
        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
        time.sleep(client_interval)
    child.join(timeout=max(1.0, deadline - time.monotonic()))
    if child.is_alive():
        child.kill()
        raise LabError("the flood did not finish within 600 s")
    flood_s = time.monotonic() - t0
    for th in threads:
        th.join(client_timeout + 5)
    stats = rx.recv() if rx.poll(5) else {"sent": 0, "seconds": 0.0}
    ok = sum(1 for good, _ in results if good)
    times = sorted(t for good, t in results if good)
    return {"sent": stats["sent"], "seconds": round(stats["seconds"], 3),
            "pps": round(stats["sent"] / stats["seconds"]) if stats["seconds"] else None,
            "src": src, "flood_s": round(flood_s, 3), "clients": len(results), "clients_ok": ok,
            "client_p50_s": round(times[len(times) // 2], 4) if times else None,
            "client_max_s": round(times[-1], 4) if times else None}


# ---------------------------------------------------------------------------------------------
# Malformed storm
# ---------------------------------------------------------------------------------------------

def _with_tcp_bytes(pkt: bytearray, tcp: bytes) -> bytearray:
    """``pkt``'s IP header with ``tcp`` as its payload (the kernel fixes the IP length)."""
    return bytearray(pkt[:20]) + tcp


def storm_packets(per_kind: int, seed: int = 2) -> dict[str, tuple[str, list]]:
    """Hostile segments by kind: ``{kind: (the drop reason the responder must count, packets)}``.

    TCP-level defects with a right IP header (what reaches a raw socket), stray RSTs/ACKs/data
    to the listening port, and out-of-window segments aimed at half-open TCBs from
    :data:`GHOST` (their SYNs are sent first, by :func:`storm`)."""
    rnd = random.Random(seed)
    ports = rnd.sample(range(*FLOOD_PORTS), per_kind * 8)
    kinds: dict[str, tuple[str, list]] = {}

    def port():
        return ports.pop()

    def each(fn):
        return [fn() for _ in range(per_kind)]

    def bad_checksum():
        p = packet(HOST, port(), rnd.getrandbits(32), flags=SYN)
        p[20 + wire.TCP_CHECKSUM] ^= 0x5A
        return p

    def truncated():
        return _with_tcp_bytes(packet(HOST, port()), packet(HOST, 0)[20:20 + rnd.randint(4, 19)])

    def doff_past_end():
        p = packet(HOST, port(), flags=ACK)
        p[20 + 12] = rnd.randint(6, 15) << 4            # says 24-60 bytes of header, has 20
        return _fix_tcp_checksum(p)

    def doff_too_small():
        p = packet(HOST, port(), flags=ACK, payload=b"x" * 8)
        p[20 + 12] = rnd.randint(0, 4) << 4
        return _fix_tcp_checksum(p)

    def option_overrun():
        opts = wire.TcpOptions(unknown=[(30, b"ab")])
        p = packet(HOST, port(), flags=SYN, options=opts)
        p[20 + 21] = rnd.choice((0, 1, 9, 40))          # the option's length byte
        return _fix_tcp_checksum(p)

    def bad_option():
        p = packet(HOST, port(), flags=SYN, options=wire.TcpOptions(mss=1460))
        p[20 + 21] = rnd.choice((3, 2))                  # MSS with length 3 (or 2)
        return _fix_tcp_checksum(p)

    kinds["bad_checksum"] = ("bad_checksum", each(bad_checksum))
    kinds["truncated"] = ("truncated", each(truncated))
    kinds["doff_past_end"] = ("bad_data_offset", each(doff_past_end))
    kinds["doff_too_small"] = ("bad_data_offset", each(doff_too_small))
    kinds["option_overrun"] = ("option_overrun", each(option_overrun))
    kinds["bad_option"] = ("bad_option", each(bad_option))
    kinds["rst_storm"] = ("rst", each(lambda: packet(HOST, port(), rnd.getrandbits(32),
                                                     flags=RST)))
    kinds["ack_storm"] = ("listen_ack", each(lambda: packet(
        HOST, port(), rnd.getrandbits(32), rnd.getrandbits(32), flags=ACK)))
    kinds["out_of_window"] = ("out_of_window", [])      # filled by storm(): needs the TCBs
    # reasons shared by two kinds add up
    return kinds


def _fix_tcp_checksum(p: bytearray) -> bytearray:
    p[20 + wire.TCP_CHECKSUM:20 + wire.TCP_CHECKSUM + 2] = b"\0\0"
    s = wire.internet_checksum(p[20:], wire.pseudo_header_sum(p[12:16], p[16:20], 6,
                                                              len(p) - 20))
    p[20 + wire.TCP_CHECKSUM:20 + wire.TCP_CHECKSUM + 2] = s.to_bytes(2, "big")
    return p


def nc_hello(timeout: float = 10) -> bool:
    """The real nc, as the demo runs it: must get exactly the three lines."""
    r = subprocess.run(["nc", VM, str(PORT)], input=b"", capture_output=True, timeout=timeout)
    return r.returncode == 0 and r.stdout == HELLO


def storm(per_kind: int = 100, nc_runs: int = 3) -> dict:
    """Send every kind of :func:`storm_packets` (interleaved), with ``nc_runs`` real nc hello
    exchanges in between; report what was sent per reason and whether every nc got its lines."""
    if not 0 < per_kind <= 10_000:
        raise LabError(f"per-kind count {per_kind}: choose 1..10000")
    sock = raw_sender()
    kinds = storm_packets(per_kind)
    rnd = random.Random(3)
    # Half-open TCBs from the ghost address, then segments far outside their windows.
    ghost_ports = rnd.sample(range(40000, 40000 + 4 * per_kind), per_kind)
    isns = [rnd.getrandbits(32) for _ in ghost_ports]
    send_all(sock, [packet(GHOST, p, s) for p, s in zip(ghost_ports, isns)])
    time.sleep(0.2)
    kinds["out_of_window"] = ("out_of_window", [
        packet(GHOST, p, s + 1 + (1 << 30), 0, flags=ACK | PSH, payload=b"far away")
        for p, s in zip(ghost_ports, isns)])
    queue = [(k, p) for k, (_, pkts) in kinds.items() for p in pkts]
    rnd.shuffle(queue)
    sent: dict[str, int] = {}
    expect: dict[str, int] = {}
    nc_ok = []
    chunk = max(1, len(queue) // (nc_runs + 1))
    for i in range(0, len(queue), chunk):
        for kind, p in queue[i:i + chunk]:
            send_all(sock, [p])
            sent[kind] = sent.get(kind, 0) + 1
            reason = kinds[kind][0]
            expect[reason] = expect.get(reason, 0) + 1
        if len(nc_ok) < nc_runs:
            nc_ok.append(nc_hello())
    while len(nc_ok) < nc_runs:
        nc_ok.append(nc_hello())
    return {"sent": sent, "expect_drops": expect, "ghost_syns": len(ghost_ports),
            "nc_ok": nc_ok}


# ---------------------------------------------------------------------------------------------
# RFC 5961 blind attacks on a live connection (echo app)
# ---------------------------------------------------------------------------------------------

class Sniffer:
    """The responder's segments to one client port, as seen in the host namespace (a raw
    IPPROTO_TCP socket gets a copy of every TCP packet this namespace receives)."""

    def __init__(self, cport: int):
        self.cport = cport
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.sock.settimeout(0.05)
        self.last = None

    def collect(self, seconds: float) -> list:
        """Every segment from the responder to our port within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            try:
                seg = wire.parse(data)
            except wire.WireError:
                continue
            if seg.src == wire.ip_bytes(VM) and seg.sport == PORT and seg.dport == self.cport:
                out.append(seg)
                self.last = seg
        return out

    def close(self):
        self.sock.close()


def _seg_info(seg) -> dict:
    return {"flags": wire.flags_str(seg.flags), "seq": seg.seq, "ack": seg.ack,
            "len": len(seg.payload)}


def blind(settle: float = 0.3) -> dict:
    """Open a real connection to the echo app, learn its sequence numbers from the responder's
    own segments, then inject (each from the client's 4-tuple, by raw socket):

    1. an RST in the window but not at RCV.NXT (RFC 5961 3.2) -> a challenge ACK;
    2. a SYN (RFC 5961 4.2) -> a challenge ACK;
    3. data at exactly RCV.NXT with an ACK far older than SND.UNA - MAX.SND.WND (RFC 5961 5.2)
       -> dropped and a challenge ACK, nothing echoed;
    after each, the connection must still echo;
    4. an RST at exactly RCV.NXT (RFC 5961 3.2) -> the connection is reset.
    """
    b = _Blind(settle)
    try:
        b.res["first_echo"] = b.echo(b"ping")
        b.inject("rst_in_window", lambda rcv, snd: (rcv + 1000, 0), RST)
        b.res["steps"]["rst_in_window"]["echo_after"] = b.echo(b"alive1")
        b.inject("syn", lambda rcv, snd: (rcv + 12345, 0), SYN)
        b.res["steps"]["syn"]["echo_after"] = b.echo(b"alive2")
        b.inject("old_ack_data", lambda rcv, snd: (rcv, snd - (1 << 31) + 1), ACK | PSH,
                 b"EVIL")
        b.res["steps"]["old_ack_data"]["echo_after"] = b.echo(b"alive3")
        b.inject("rst_exact", lambda rcv, snd: (rcv, 0), RST)
        b.res["steps"]["rst_exact"]["after"] = b.after_reset()
    finally:
        b.close()
    return b.res


class _Blind:
    """A real client connection, a sniffer of the responder's segments to it, and a raw socket
    that injects segments on its 4-tuple (:func:`blind`)."""

    def __init__(self, settle: float):
        self.settle = settle
        self.sock = raw_sender()
        self.c = socket.create_connection((VM, PORT), timeout=5)
        self.c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cport = self.c.getsockname()[1]
        self.sn = Sniffer(self.cport)
        self.res: dict = {"client_port": self.cport, "steps": {}}

    def echo(self, msg: bytes) -> str:
        self.c.sendall(msg)
        got = b""
        self.c.settimeout(3)
        try:
            while len(got) < len(msg):
                b = self.c.recv(4096)
                if not b:
                    break
                got += b
        except OSError as e:
            return f"error: {type(e).__name__}"
        return got.decode(errors="replace")

    def live(self) -> tuple[int, int]:
        """(RCV.NXT, SND.NXT) of the responder, from its last segment to us."""
        seg = self.sn.last
        return seg.ack, (seg.seq + len(seg.payload)) & 0xFFFFFFFF

    def inject(self, name: str, where, flags: int, payload=b"") -> None:
        """``where(rcv_nxt, snd_nxt) -> (seq, ack)``, from the live values once traffic has
        settled.  A timestamp option rides along when the connection uses them (RFC 7323 would
        drop a segment without one before any RFC 5961 check): TSval = the responder's latest
        TSecr plus 10,000 (Linux's TSval ticks in ms; the kernel's ACKs may have moved TS.Recent
        on since that segment, and PAWS must not be what drops ours), TSecr = its latest
        TSval."""
        self.sn.collect(self.settle)
        rcv_nxt, snd_nxt = self.live()
        seq, ack = where(rcv_nxt, snd_nxt)
        ts = self.sn.last.options.timestamps
        opts = wire.TcpOptions(timestamps=((ts[1] + 10_000) & 0xFFFFFFFF, ts[0])) \
            if ts and not flags & RST \
            else wire.NO_OPTIONS
        send_all(self.sock, [packet(HOST, self.cport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                    flags, payload, options=opts)])
        answers = self.sn.collect(self.settle)
        self.res["steps"][name] = {
            "rcv_nxt": rcv_nxt, "snd_nxt": snd_nxt, "sent_seq": seq & 0xFFFFFFFF,
            "sent_ack": ack & 0xFFFFFFFF, "answers": [_seg_info(a) for a in answers],
            "challenge_ack": any(a.flags == ACK and not a.payload and a.ack == rcv_nxt
                                 and a.seq == snd_nxt for a in answers)}

    def after_reset(self) -> str:
        self.c.settimeout(3)
        try:
            self.c.sendall(b"after-rst")
            got = self.c.recv(4096)
            return "eof" if not got else f"data {got!r}"
        except ConnectionResetError:
            return "reset"
        except OSError as e:
            return f"error {type(e).__name__}"

    def close(self) -> None:
        self.c.close()
        self.sn.close()
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# Running in the lab's host namespace
# ---------------------------------------------------------------------------------------------

def run_in_lab(backend, *args: str, timeout: float = 600) -> dict:
    """``python -m harness.stress.attack ARGS`` in the lab's host namespace; its JSON result."""
    cmd = backend.host_exec_prefix() + [sys.executable, "-m", "harness.stress.attack", *args]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    try:
        r = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise LabError(f"harness.stress.attack {' '.join(args)} did not finish within {timeout:g} s")
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise LabError(f"harness.stress.attack {' '.join(args)} failed: {tail}")
    return json.loads(r.stdout)


def syn_flood(backend, count: int = 100_000, *, src: str = HOST, clients: int = 0,
              client_interval: float = 0.005, watch_pid: int | None = None) -> dict:
    """``count`` spoofed-port SYNs at the lab VM's port 80 from ``src`` (inside the lab
    network), as fast as one raw socket sends them, with ``clients`` legitimate hello clients
    during it.  For ``invoke bench --flood`` and the tests; the responder must be running."""
    lab_address(src)
    return run_in_lab(backend, "flood", "--count", str(count), "--src", src,
                      "--clients", str(clients), "--client-interval", str(client_interval),
                      *(["--watch-pid", str(watch_pid)] if watch_pid else []))


def malformed_storm(backend, per_kind: int = 100, nc_runs: int = 3) -> dict:
    return run_in_lab(backend, "storm", "--per-kind", str(per_kind), "--nc", str(nc_runs))


def blind_attacks(backend) -> dict:
    return run_in_lab(backend, "blind")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.stress.attack", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--count", type=int, default=100_000)
    f.add_argument("--src", default=HOST)
    f.add_argument("--clients", type=int, default=0)
    f.add_argument("--client-interval", type=float, default=0.005)
    f.add_argument("--watch-pid", type=int)
    s = sub.add_parser("storm")
    s.add_argument("--per-kind", type=int, default=100)
    s.add_argument("--nc", type=int, default=3)
    sub.add_parser("blind")
    a = p.parse_args(argv)
    if a.cmd == "flood":
        res = flood(a.count, a.src, a.clients, a.client_interval, watch_pid=a.watch_pid)
    elif a.cmd == "storm":
        res = storm(a.per_kind, a.nc)
    else:
        res = blind()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------
# The responder under attack: start it, read its counters and memory
# ---------------------------------------------------------------------------------------------

class Target:
    """The responder running in the lab VM (over SSH, as the demo starts it), with what an
    attack test needs: its counters (SIGUSR1 -> one JSON line on stderr), its memory and
    capabilities (/proc: the netns lab shares this machine's PID namespace)."""

    def __init__(self, backend, app: str = "hello", *extra: str):
        from harness.run.ssh import LabSSH
        self.backend = backend
        self.args = ["--app", app, *extra]
        self.ssh = LabSSH(backend.ssh_endpoint())
        self.proc = None
        self.exit_status = None

    def __enter__(self) -> "Target":
        from harness.run.responder import start_responder
        self.proc = start_responder(self.ssh, self.backend, self.args)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc is not None:
                self.exit_status = self.proc.stop()
        finally:
            self.ssh.close()

    def counters(self, timeout: float = 5.0) -> dict:
        """Ask for the counters now (SIGUSR1) and return the JSON line it prints."""
        from harness.run.responder import responder_counters
        before = self.proc.stderr.count("\n{")
        self.proc.signal("USR1")
        deadline = time.monotonic() + timeout
        while self.proc.stderr.count("\n{") <= before:
            if time.monotonic() > deadline or not self.proc.running():
                raise LabError(f"the responder printed no counters within {timeout:g} s: "
                               f"{self.proc.stderr[-500:]!r}")
            time.sleep(0.02)
        return responder_counters(self.proc.stderr)

    def proc_status(self) -> dict:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB: now, and the peak since start."""
        st = self.proc_status()
        return int(st["VmRSS"].split()[0]), int(st["VmHWM"].split()[0])
