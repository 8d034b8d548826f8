"""The state machine table: RFC 5961, opens and closes, the half-open bound, and a Hypothesis sweep
of every (state, segment kind) pair checking that the outcome is the one TABLE states."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from responder.contract import STATE_NAMES
from responder.tcp import NOT_CLASSIFIED, TABLE, Ev, Stack, State, classify, seq_add
from responder.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpOptions

from tests.unit.tcp_helpers import (LOCAL_ISS, REMOTE_ISS, RPORT, STARTS, Peer, conn_closing,
                                    conn_established, conn_listen, conn_syn_received,
                                    conn_syn_sent, conn_time_wait)

# --- RFC 5961 ---------------------------------------------------------------------------


def test_exact_rst_resets():
    p = conn_established()
    p.recv_nothing(p.send(p.seg(RST)))
    assert p.state is State.CLOSED and ("closed", "reset") in p.app.events


def test_in_window_rst_gets_challenge_ack():
    p = conn_established()
    out = p.send(p.seg(RST, seq=REMOTE_ISS + 100))
    p.recv(out, flags=ACK, seq=LOCAL_ISS + 1, ack=REMOTE_ISS + 1)
    assert p.state is State.ESTABLISHED
    assert p.stack.stats()["challenge_acks"] == 1


def test_out_of_window_rst_ignored():
    p = conn_established()
    p.recv_nothing(p.send(p.seg(RST, seq=REMOTE_ISS - 5000)))
    assert p.state is State.ESTABLISHED


def test_syn_in_established_gets_challenge_ack():
    p = conn_established()
    out = p.send(p.syn(seq=REMOTE_ISS + 12345), advance=False)
    p.recv(out, flags=ACK, seq=LOCAL_ISS + 1, ack=REMOTE_ISS + 1)
    assert p.state is State.ESTABLISHED


def test_challenge_acks_are_throttled_per_second():
    p = conn_established()
    sent = sum(len(p.send(p.seg(RST, seq=REMOTE_ISS + 10 + i))) for i in range(15))
    assert sent == 10
    p.now += 1.0
    assert len(p.send(p.seg(RST, seq=REMOTE_ISS + 50))) == 1


def test_ack_of_unsent_data_gets_ack_and_is_dropped():
    p = conn_established()
    out = p.send(p.seg(ACK, ack=LOCAL_ISS + 1000, payload=b"zz"), advance=False)
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 1)
    assert p.app.data == b""


def test_ack_too_old_is_challenged():
    p = conn_established()
    out = p.send(p.seg(ACK, ack=LOCAL_ISS - 10 * 65536 * 32), advance=False)
    p.recv(out, flags=ACK)
    assert p.stack.drops["bad_ack"] == 1


def test_syn_received_bad_ack_gets_rst():
    p = conn_syn_received()
    out = p.send(p.seg(ACK, ack=LOCAL_ISS + 77), advance=False)
    p.recv(out, flags=RST, seq=LOCAL_ISS + 77)
    assert p.state is State.SYN_RECEIVED


def test_rst_in_syn_received_returns_to_listen():
    p = conn_syn_received()
    p.recv_nothing(p.send(p.seg(RST, seq=REMOTE_ISS + 1)))
    assert p.state is State.CLOSED and p.stack.stats()["half_open"] == 0


# --- active open, simultaneous open and close ----------------------------------------------

def test_active_open_synack_establishes():
    p = conn_syn_sent()
    out = p.send(p.seg(SYN | ACK, seq=REMOTE_ISS, ack=LOCAL_ISS + 1,
                       options=TcpOptions(mss=1200, wscale=2, timestamps=(5, p.last_tsval_seen))))
    p.recv(out, flags=ACK, seq=LOCAL_ISS + 1, ack=REMOTE_ISS + 1)
    c = p.conn
    assert p.state is State.ESTABLISHED and p.app.events == ["open"]
    assert c.snd_mss == 1200 - 12 and c.snd_wscale == 2 and not c.sack_ok
    assert p.log == ["192.168.56.100:80 <> 192.168.56.1:62438 CLOSED => SYN-SENT",
                     "192.168.56.100:80 <> 192.168.56.1:62438 SYN-SENT => ESTABLISHED"]


def test_active_open_refused_by_rst():
    p = conn_syn_sent()
    p.recv_nothing(p.send(p.seg(RST | ACK, seq=0, ack=LOCAL_ISS + 1)))
    assert p.state is State.CLOSED and ("closed", "refused") in p.app.events


def test_active_open_bad_ack_gets_rst_and_rst_without_ack_ignored():
    p = conn_syn_sent()
    p.recv(p.send(p.seg(SYN | ACK, seq=REMOTE_ISS, ack=LOCAL_ISS + 9)), flags=RST,
           seq=LOCAL_ISS + 9)
    p.recv_nothing(p.send(p.seg(RST, seq=REMOTE_ISS)))
    assert p.state is State.SYN_SENT


def test_simultaneous_open():
    """RFC 9293 figure 8: both send SYN, both answer SYN,ACK, both reach ESTABLISHED."""
    p = conn_syn_sent()
    out = p.send(p.syn())                              # the peer's own SYN crosses ours
    p.recv(out, flags=SYN | ACK, seq=LOCAL_ISS, ack=REMOTE_ISS + 1)
    assert p.state is State.SYN_RECEIVED
    out = p.send(p.seg(SYN | ACK, seq=REMOTE_ISS, ack=LOCAL_ISS + 1), advance=False)
    assert p.state is State.ESTABLISHED
    assert "open" in p.app.events
    assert all(not s.flags & RST for s in out)


def test_simultaneous_close_through_closing():
    p = conn_closing()
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.state is State.TIME_WAIT
    assert [l.split()[-1] for l in p.log[-3:]] == ["FIN-WAIT-1", "CLOSING", "TIME-WAIT"]


def test_fin_that_acks_our_fin_goes_straight_to_time_wait():
    from tests.unit.tcp_helpers import conn_fin_wait_1
    p = conn_fin_wait_1()
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    p.recv(p.send(p.seg(FIN | ACK)), flags=ACK, ack=REMOTE_ISS + 2)
    assert p.state is State.TIME_WAIT


def test_close_in_syn_received_waits_for_established():
    p = conn_syn_received()
    p.conn.close()
    p.recv_nothing(p.stack.take_output())
    out = p.send(p.seg(ACK))
    p.recv(out, flags=FIN | ACK, seq=LOCAL_ISS + 1)
    assert p.state is State.FIN_WAIT_1


def test_last_ack_completes():
    from tests.unit.tcp_helpers import conn_last_ack
    p = conn_last_ack()
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.state is State.CLOSED and ("closed", "closed") in p.app.events


def test_time_wait_reopened_by_newer_syn_else_challenged():
    p = conn_time_wait()
    p.tsval += 10
    out = p.send(p.syn(seq=REMOTE_ISS + 100000))
    p.recv(out, flags=SYN | ACK, ack=REMOTE_ISS + 100001)
    assert p.state is State.SYN_RECEIVED
    q = conn_time_wait()
    out = q.send(q.syn(seq=REMOTE_ISS - 5), advance=False)
    q.recv(out, flags=ACK)
    assert q.state is State.TIME_WAIT


def test_half_open_table_bounded_oldest_dropped():
    p = conn_listen(max_half_open=4)
    for port in range(1000, 1010):
        p.port = port
        p.recv(p.send(p.syn()), flags=SYN | ACK)
    st = p.stack.stats()
    assert st["half_open"] == 4 and st["connections_open"] == 4
    assert st["drops"]["syn_queue_overflow"] == 6
    assert sorted(k[3] for k in p.stack.conns) == [1006, 1007, 1008, 1009]
    p.port = 1009
    p.send(p.seg(ACK))
    assert p.state is State.ESTABLISHED and p.stack.stats()["half_open"] == 3


def test_many_connections_at_once():
    p = conn_listen()
    for port in range(2000, 2200):
        p.port = port
        p.snd_nxt = REMOTE_ISS
        p.send(p.syn())
        p.send(p.seg(ACK))
    assert sum(c.state is State.ESTABLISHED for c in p.stack.conns.values()) == 200


def test_every_state_reached_by_fixtures():
    reached = {s for s in STARTS} | {State.CLOSED}
    assert reached == set(State)


# --- the table ------------------------------------------------------------------------------

def test_table_is_complete():
    actions = Stack().actions
    for state in State:
        for ev in Ev:
            rule = TABLE[state, ev]
            assert rule.cite and rule.next
            assert rule.action in actions, rule
    # and the stack has no action the table never names
    assert {r.action for r in TABLE.values()} == set(actions)


def test_state_names_are_the_contracts():
    """State is built from contract.STATE_NAMES (the harness's scenarios use the same)."""
    assert tuple(str(s) for s in State) == STATE_NAMES
    assert State.SYN_RECEIVED.value == "SYN-RECEIVED" and str(State.TIME_WAIT) == "TIME-WAIT"


@pytest.mark.parametrize("state", [s for s in STARTS if s is not State.LISTEN])
def test_user_close_in_every_state(state):
    p = STARTS[state]()
    p.conn.close()
    rule = TABLE[state, Ev.CLOSE]
    assert p.state in rule.next


FLAG_BITS = [SYN, ACK, FIN, RST, PSH, URG, ECE, CWR]


def segment_for(p, pick, pick_flags):
    """A segment aimed at the interesting values of the connection's current state; ``pick``
    chooses one of a list, ``pick_flags`` a set of flag bits (Hypothesis or a seeded Random)."""
    c = p.conn
    rcv = c.rcv_nxt if c else REMOTE_ISS + 1
    snd_una = c.snd_una if c else LOCAL_ISS + 1
    snd_nxt = c.snd_nxt if c else LOCAL_ISS + 1
    wnd = c.rcv_wnd if c else 1000
    irs = c.irs if c else REMOTE_ISS
    flags = pick_flags()
    f = 0
    for x in flags:
        f |= x
    seq = pick([rcv, seq_add(rcv, 1), seq_add(rcv, wnd // 2),
                                seq_add(rcv, wnd), seq_add(rcv, -1), seq_add(rcv, -100000),
                                seq_add(rcv, 1 << 31), irs, 0])
    ack = pick([snd_nxt, snd_una, seq_add(snd_una, -1), seq_add(snd_nxt, 1),
                                seq_add(snd_una, -(1 << 20)), seq_add(snd_nxt, 1 << 31),
                                LOCAL_ISS, LOCAL_ISS + 1])
    payload = pick([b"", b"x", b"hello", b"y" * 1448])
    ts = pick(["now", "old", "none", "newer"])
    base = c.ts_recent if c and c.ts_ok else p.tsval
    tsval = {"now": base, "old": seq_add(base, -1000), "newer": seq_add(base, 1000)}.get(ts)
    opts = TcpOptions() if tsval is None else TcpOptions(timestamps=(tsval, 0))
    if f & SYN:
        opts = TcpOptions(mss=pick([None, 536, 1460]), wscale=3,
                          sack_permitted=True, timestamps=opts.timestamps)
    window = pick([0, 1, 1024, 65535])
    return p.seg(f, seq=seq, ack=ack, payload=payload, window=window, options=opts)


OUTCOME_CHECKS = {
    "drop": lambda out, c: out == [],
    "reset": lambda out, c: len(out) == 1 and out[0].flags & RST,
    "cookie_or_reset": lambda out, c: len(out) == 1 and out[0].flags & RST,  # random: no cookie
    "peer_reset": lambda out, c: out == [],
    "ack_drop": lambda out, c: len(out) <= 1 and all(s.flags == ACK for s in out),
    "challenge_ack": lambda out, c: len(out) <= 1 and all(s.flags == ACK for s in out),
    "passive_open": lambda out, c: [s.flags for s in out] == [SYN | ACK],
    "resend_synack": lambda out, c: [s.flags for s in out] == [SYN | ACK],
    "simultaneous_open": lambda out, c: [s.flags for s in out] == [SYN | ACK],
    "synack": lambda out, c: out and not any(s.flags & RST for s in out),
    "accept": lambda out, c: not any(s.flags & (RST | SYN) for s in out),
    "delete": lambda out, c: not any(s.flags & RST for s in out),
    "timewait_fin": lambda out, c: [s.flags for s in out] == [ACK],
    "timewait_syn": lambda out, c: len(out) == 1,
}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from(list(STARTS) + [State.CLOSED]), data=st.data())
def test_sweep_every_state_and_segment_kind(state, data):
    """Whatever arrives in whatever state: nothing raises, the segment's kind maps to a table
    entry, what is sent matches the entry's action, and the next state is one it allows."""
    p = STARTS[State.LISTEN]() if state is State.CLOSED else STARTS[state]()
    seg = segment_for(p, lambda xs: data.draw(st.sampled_from(xs)),
                      lambda: data.draw(st.sets(st.sampled_from(FLAG_BITS), max_size=4)))
    if state is State.CLOSED:
        seg.dport = 81                                         # nobody listens there
    c = p.conn
    ev = classify(c, state, seg, p.now) if c or state is not State.LISTEN else \
        classify(None, State.LISTEN, seg, p.now)
    rule = TABLE[state, ev]
    if state in (State.LISTEN, State.CLOSED) and not seg.flags & SYN and rule.action != "drop" \
            and seg.flags & RST:
        pytest.fail("RST must never be answered")
    out = p.send(seg, advance=False)
    assert OUTCOME_CHECKS[rule.action](out, c), (state, ev, rule, out)
    if c is not None:
        after = c.state
        assert after in rule.next or (after is State.CLOSED and State.CLOSED in rule.next), \
            (state, ev, after, rule)
    assert not any(s.flags & RST for s in out if seg.flags & RST), "never answer RST with RST"


def test_sweep_reaches_every_reachable_pair():
    """The sweep's segment generator produces every (state, kind) pair classify can yield."""
    import random

    rnd = random.Random(7)
    seen = set()
    for state, start in list(STARTS.items()) + [(State.CLOSED, STARTS[State.LISTEN])]:
        p = start()
        for _ in range(3000):
            seg = segment_for(p, rnd.choice,
                              lambda: set(rnd.sample(FLAG_BITS, rnd.randint(0, 4))))
            c = p.conn if state is not State.CLOSED else None
            seen.add((state, classify(c, state, seg, p.now)))
    segment_events = [e for e in Ev if e not in (Ev.CLOSE, Ev.TIMEOUT)]
    expected = {(s, e) for s in State for e in segment_events} - NOT_CLASSIFIED
    assert seen == expected, (sorted(map(str, expected - seen)), sorted(map(str, seen - expected)))


# --- SYN cookies -----------------------------------------------------------------------

def _flood_then_legit(ts=True, wscale=5, max_half_open=4):
    """Half-fill the table, then a legitimate SYN (cookie ISS), then a flood that pushes its
    TCB out; returns the peer and the legitimate SYN,ACK."""
    p = conn_listen(max_half_open=max_half_open, fixed_isn=None, timestamps=ts, wscale=wscale)
    for port in range(3000, 3000 + max_half_open // 2):
        p.port = port
        p.send(p.syn(), advance=False)
    p.port = RPORT
    synack = p.recv(p.send(p.syn()), flags=SYN | ACK)
    for port in range(4000, 4000 + max_half_open):
        p.port = port
        p.send(p.syn(), advance=False)
    p.port = RPORT
    assert p.conn is None                                  # pushed out
    return p, synack


def test_syn_cookie_rebuilds_pushed_out_tcb_with_its_options():
    p, synack = _flood_then_legit()
    p.rcv_nxt = seq_add(synack.seq, 1)
    p.last_tsval_seen = synack.options.timestamps[0]
    out = p.send(p.seg(ACK, payload=b"hi"))
    c = p.conn
    assert c is not None and c.state is State.ESTABLISHED
    p.recv(out, flags=ACK, ack=REMOTE_ISS + 3)
    assert p.app.data == b"hi"
    assert c.snd_wscale == 5 and c.rcv_wscale == 7 and c.sack_ok and c.ts_ok
    assert c.snd_mss == 1460 - 12
    assert p.stack.stats()["syn_cookies_accepted"] == 1
    # our TSval never goes backwards after the cookie's rounded-down one
    c.send(b"x")
    assert p.stack.take_output()[0].options.timestamps[0] >= synack.options.timestamps[0]


def test_syn_cookie_without_timestamps_offers_no_wscale_or_sack():
    p, synack = _flood_then_legit(ts=False)
    assert synack.options.wscale is None and not synack.options.sack_permitted
    p.rcv_nxt = seq_add(synack.seq, 1)
    p.send(p.seg(ACK))
    assert p.conn.state is State.ESTABLISHED and p.conn.snd_wscale == 0


def test_forged_or_stale_cookie_gets_rst():
    p, synack = _flood_then_legit()
    out = p.send(p.seg(ACK, ack=seq_add(synack.seq, 2)), advance=False)   # off by one
    p.recv(out, flags=RST)
    p.now += 200                                            # > two 64 s slots
    out = p.send(p.seg(ACK, ack=seq_add(synack.seq, 1)), advance=False)
    p.recv(out, flags=RST)
    assert p.conn is None


def test_no_cookies_without_pressure_rfc6528_isn():
    p = conn_listen(fixed_isn=None)
    s = p.recv(p.send(p.syn()), flags=SYN | ACK)
    from responder.tcp import isn_rfc6528
    from tests.unit.tcp_helpers import LOCAL, LPORT, REMOTE
    assert s.seq == isn_rfc6528(b"test-key", (LOCAL, LPORT), (REMOTE, RPORT), p.now)


def test_stray_syn_on_a_half_open_tuple_gets_ack_and_tcb_survives():
    """A flood SYN that happens to use a live half-open 4-tuple (random sequence number)."""
    p = conn_syn_received()
    out = p.send(p.syn(seq=REMOTE_ISS + 5_000_000), advance=False)
    p.recv(out, flags=ACK, seq=LOCAL_ISS + 1, ack=REMOTE_ISS + 1)
    assert p.state is State.SYN_RECEIVED
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.state is State.ESTABLISHED
    q = conn_syn_received()
    q.recv_nothing(q.send(q.syn(seq=REMOTE_ISS + 10), advance=False))   # in window: reset
    assert q.state is State.CLOSED
