"""The apps over the real state machine: hello (the lecture's exchange), echo, tarpit, miniweb,
discard; and the registry that names them."""

import pytest

from responder import wire
from responder.apps import HELLO_LINES, Discard, Echo, Hello, Miniweb, Tarpit, make_app
from responder.tcp import State, seq_add
from responder.wire import ACK, FIN, PSH, RST, Segment, TcpOptions

from tests.unit.tcp_helpers import LOCAL_ISS, PEER_TS0, REMOTE_ISS, Peer, conn_syn_received


def hello_open():
    p = conn_syn_received(app=Hello())
    synack = p.stack.conns[next(iter(p.stack.conns))]
    assert synack
    p.tsval += 1
    out = p.send(p.seg(ACK))
    return p, out


def test_hello_sends_three_segments_back_to_back_then_fin():
    p, out = hello_open()
    assert [len(s.payload) for s in out] == [11, 20, 66, 0]
    assert [bytes(s.payload) for s in out[:3]] == list(HELLO_LINES)
    assert [s.flags for s in out] == [PSH | ACK] * 3 + [FIN | ACK]
    # relative seq 1:12, 12:32, 32:98, FIN at 98 -- as in the lecture's capture
    assert [s.seq - LOCAL_ISS for s in out] == [1, 12, 32, 98]
    assert all(s.ack == REMOTE_ISS + 1 for s in out)
    # TSecr echoes the TSval of the ACK that completed the handshake (RFC 7323 4.3)
    assert all(s.options.timestamps[1] == PEER_TS0 + 1 for s in out)
    assert p.state is State.FIN_WAIT_1
    assert "SYN-RECEIVED => ESTABLISHED" in p.log[1]


def test_hello_acks_and_discards_client_data_and_acks_client_fin():
    p, out = hello_open()
    p.rcv_nxt = seq_add(LOCAL_ISS, 99)                     # everything incl. our FIN
    out = p.send(p.seg(ACK | PSH, payload=b"ignored\n"))
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 1 + 8)
    assert p.state is State.FIN_WAIT_2
    out = p.send(p.seg(FIN | ACK))
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 1 + 8 + 1)
    assert p.state is State.TIME_WAIT


def test_hello_segments_build_with_correct_checksums():
    p, out = hello_open()
    for s in out:
        pkt = wire.build_packet(s)
        back = wire.parse(pkt)                 # verifies both checksums
        assert bytes(back.payload) == bytes(s.payload)


def test_echo_echoes_and_closes_after_peer():
    p = conn_syn_received(app=Echo())
    p.send(p.seg(ACK))
    out = p.send(p.seg(ACK | PSH, payload=b"ping"))
    s = p.recv(out, flags=ACK | PSH, payload=b"ping", ack=REMOTE_ISS + 5)
    p.rcv_nxt = seq_add(s.seq, 4)
    out = p.send(p.seg(FIN | ACK))
    assert [x.flags for x in out] == [FIN | ACK]            # FIN carries the ACK of theirs
    assert out[0].ack == REMOTE_ISS + 6
    assert p.state is State.LAST_ACK


def test_echo_flow_control_closes_window_when_peer_does_not_read():
    app = Echo(buffer=4000)
    p = conn_syn_received(app=app, wscale=None)
    p.send(p.seg(ACK, window=0))                              # the peer's window is zero
    out = p.send(p.seg(ACK, payload=b"x" * 1000, window=0))
    s = p.recv(out, flags=ACK)
    assert s.window <= 3000                                   # our window shrank by the echo
    assert p.conn.send_buffered == 1000


def test_tarpit_zero_window_then_stateless():
    app = Tarpit()
    p = conn_syn_received(app=app)
    assert p.stack.take_output() == []
    p2 = Peer(app=Tarpit())
    out = p2.send(p2.syn())
    assert out[0].window == 0
    out = p2.send(p2.seg(ACK))
    assert p2.stack.conns == {}                     # forgotten: no memory per held peer
    # Linux zero-window probe: seq = SND.UNA - 1, no data -> ACK SND.UNA, window 0
    probe = p2.seg(ACK, seq=seq_add(p2.snd_nxt, -1))
    out = p2.send(probe, advance=False)
    s = p2.recv(out, flags=ACK, ack=p2.snd_nxt, seq=LOCAL_ISS + 1, window=0)
    assert s.options.timestamps[1] == p2.tsval
    # one-byte probe: nothing is accepted
    out = p2.send(p2.seg(ACK, payload=b"A"), advance=False)
    p2.recv(out, ack=p2.snd_nxt, window=0)
    p2.recv_nothing(p2.send(p2.seg(RST, seq=p2.snd_nxt)))


def test_miniweb_patches_precomputed_packets_exactly_like_a_full_build():
    page = b"<p>" + b"x" * 3000 + b"</p>"
    app = Miniweb(page, mss=1448)
    p = conn_syn_received(app=app)
    p.send(p.seg(ACK))
    out = p.send(p.seg(ACK | PSH, payload=b"GET / HTTP/1.0\r\n\r\n"))
    data = [s for s in out if len(s.payload)]
    assert len(data) == 3 and out[-1].flags & FIN
    for s in data:
        patched = bytes(app.encode(s))
        assert patched == bytes(wire.build_tcp(s))            # RFC 1624 == recomputation
    assert app.patched == 3
    body = b"".join(bytes(s.payload) for s in data)
    assert body.startswith(b"HTTP/1.0 200 OK\r\n") and body.endswith(page)


def test_miniweb_second_connection_reuses_templates():
    app = Miniweb()
    for port in (40000, 40001):
        p = Peer(app=app)
        p.port = port
        p.send(p.syn())
        p.send(p.seg(ACK))
        out = p.send(p.seg(ACK, payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        s = out[0]
        assert bytes(app.encode(s)) == bytes(wire.build_tcp(s))


def test_miniweb_encode_ignores_foreign_segments():
    app = Miniweb()
    seg = Segment(b"\1\1\1\1", b"\2\2\2\2", 1, 2, 3, 4, ACK | PSH, 5, payload=b"other")
    assert app.encode(seg) is None


def test_make_app_names():
    assert isinstance(make_app("hello"), Hello)
    assert isinstance(make_app("http"), Miniweb)


def test_echo_window_closes_then_reopens_with_window_update():
    """A peer that sends but never reads (window 0 towards us): our echo buffer fills, our
    window reaches 0, the peer's probe gets window 0; when the peer reads, the echo drains and
    we announce the reopened window (RFC 1122 4.2.3.3) without being asked."""
    app = Echo(buffer=3000)
    p = conn_syn_received(app=app, wscale=None, timestamps=False)
    p.send(p.seg(ACK, window=0))
    for _ in range(3):
        p.send(p.seg(ACK, payload=b"z" * 1000, window=0))
    c = p.conn
    assert c.send_buffered == 3000 and c.rcv_wnd == 0
    probe = p.seg(ACK, seq=seq_add(p.snd_nxt, -1), window=0)
    s = p.recv(p.send(probe, advance=False), flags=ACK, window=0)
    assert s.ack == p.snd_nxt
    out = p.send(p.seg(ACK, window=4000))            # the peer reads: echo goes out...
    assert [len(x.payload) for x in out] == [1460, 1460]   # ...the 80-byte tail waits (Nagle)
    p.rcv_nxt = seq_add(LOCAL_ISS, 2921)
    out = p.send(p.seg(ACK, window=4000))             # ACKed: the tail goes, window reopens
    s = p.recv(out, flags=ACK | PSH, payload=b"z" * 80)
    assert s.window == 2920
    p.rcv_nxt = seq_add(LOCAL_ISS, 3001)
    p.recv_nothing(p.send(p.seg(ACK, window=4000)))   # < min(buf/2, MSS) more: no update
    assert c.rcv_wnd == 2920 and c.window_to_advertise() == 3000


def test_miniweb_falls_back_to_a_full_build_when_the_peer_mss_is_small():
    app = Miniweb(b"y" * 2000, mss=1448)
    p = Peer(app=app)
    syn = p.syn()
    syn.options = TcpOptions(mss=600, timestamps=(1, 0))
    p.send(syn)
    p.send(p.seg(ACK))
    out = p.send(p.seg(ACK, payload=b"GET / HTTP/1.0\r\n\r\n"))
    data = [s for s in out if len(s.payload)]
    assert all(len(s.payload) <= 600 - 12 for s in data)
    assert all(app.encode(s) is None for s in data)     # cut differently: built normally


# --- discard (RFC 863), the app added by following docs/apps.md ----------------------------

def test_discard_acks_and_throws_away_and_closes_after_the_peer():
    app = Discard()
    p = conn_syn_received(app=app)
    p.send(p.seg(ACK))
    win = None
    for chunk in (b"a" * 1000, b"b" * 1000, b"c" * 1000):
        out = p.send(p.seg(ACK | PSH, payload=chunk))
        ack = p.recv(out, flags=ACK, ack=p.snd_nxt, payload=b"")    # an ACK, nothing else
        assert win is None or ack.window == win                      # the window never shrinks
        win = ack.window
    assert app.counters() == {"discard_bytes": 3000}
    out = p.send(p.seg(FIN | ACK))
    fin = p.recv(out, flags=FIN | ACK, ack=p.snd_nxt, payload=b"")   # ACKs theirs, closes
    assert p.state is State.LAST_ACK
    p.rcv_nxt = seq_add(fin.seq, 1)
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.state is State.CLOSED


def test_discard_with_delayed_ack_acks_every_second_segment():
    p = conn_syn_received(app=Discard(), delayed_ack=0.2)
    p.send(p.seg(ACK))
    p.recv_nothing(p.send(p.seg(ACK, payload=b"x" * 100)))
    p.recv(p.send(p.seg(ACK, payload=b"y" * 100)), flags=ACK, ack=p.snd_nxt)


def test_registry_is_the_one_list_of_apps():
    import subprocess
    import sys
    from responder import contract
    from responder.apps import REGISTRY
    from responder.cli import build_parser
    from tests.conftest import ROOT
    assert contract.APPS == tuple(REGISTRY) and "discard" in contract.APPS
    for name, info in REGISTRY.items():
        assert isinstance(make_app(name), info.cls) and info.help
    assert isinstance(make_app("http", b"<p>x</p>"), Miniweb)
    with pytest.raises(ValueError, match="choose from hello, http, tarpit, echo, discard"):
        make_app("daytime")
    assert build_parser().parse_args(["--listen", "1.2.3.4:9", "--app", "discard"]).app \
        == "discard"
    out = subprocess.run([sys.executable, "-m", "responder", "--help"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    for name in REGISTRY:
        assert f"\n  {name:7} " in out, name


def test_app_counters_reach_the_io_json_line():
    from responder.cli import build_parser
    from responder.io import Responder
    opts = build_parser().parse_args(["--listen", "192.168.56.100:80", "--app", "discard"])
    r = Responder(opts, random=lambda n: b"\x07" * n)
    r.app.discarded = 7
    assert r.stats()["discard_bytes"] == 7
