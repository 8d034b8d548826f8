"""bench.account: the parsing and sorting behind ``invoke bench --profile`` (no perf needed)."""

from __future__ import annotations

from bench import account
from responder.contract import quiet_rule, rst_rule

SEND = """\
\tffffffff8204acba __ip_select_ident+0x5a ([kernel.kallsyms])
\tffffffff8209ec38 raw_sendmsg+0x808 ([kernel.kallsyms])
\tffffffff81e7f039 __sys_sendto+0x239 ([kernel.kallsyms])
\tffffffff81e7f080 __x64_sys_sendto+0x20 ([kernel.kallsyms])
\tffffffff8225a101 do_syscall_64+0x71 ([kernel.kallsyms])
\t          10acb3 __libc_sendto+0x13 (/usr/lib/x86_64-linux-gnu/libc.so.6)
"""
RST_IN_SENDTO = """\
\tffffffff8205b09f ip_output+0x5f ([kernel.kallsyms])
\tffffffff82091111 ip_send_unicast_reply+0x1 ([kernel.kallsyms])
\tffffffff82092222 tcp_v4_send_reset+0x1 ([kernel.kallsyms])
\tffffffff8209435a tcp_v4_rcv+0xe6a ([kernel.kallsyms])
\tffffffff81eb878e net_rx_action+0x16e ([kernel.kallsyms])
\tffffffff8136979d handle_softirqs+0xcd ([kernel.kallsyms])
\tffffffff8209ec38 raw_sendmsg+0x808 ([kernel.kallsyms])
\tffffffff81e7f080 __x64_sys_sendto+0x20 ([kernel.kallsyms])
"""
CLIENT_TCP = """\
\tffffffff82080cd0 tcp_rcv_state_process+0x1350 ([kernel.kallsyms])
\tffffffff82091e05 tcp_v4_do_rcv+0xd5 ([kernel.kallsyms])
\tffffffff8209435a tcp_v4_rcv+0xe6a ([kernel.kallsyms])
\tffffffff81eb878e net_rx_action+0x16e ([kernel.kallsyms])
\tffffffff8136979d handle_softirqs+0xcd ([kernel.kallsyms])
\tffffffff81e7f080 __x64_sys_sendto+0x20 ([kernel.kallsyms])
"""
PYTHON = """\
\t          143f78 _PyObject_GenericGetAttrWithDict+0x118 (/usr/bin/python3.11)
\t        203fd300 [unknown] ([unknown])
"""
RECV = """\
\tffffffff820a0000 raw_recvmsg+0x10 ([kernel.kallsyms])
\tffffffff81e7f111 __x64_sys_recvfrom+0x20 ([kernel.kallsyms])
"""
FAULT = """\
\tffffffff81651111 handle_mm_fault+0x10 ([kernel.kallsyms])
\tffffffff81652222 exc_page_fault+0x10 ([kernel.kallsyms])
"""


def _script(*stacks, period=250000):
    return "\n".join(f"python3  2654  {period} \n{s}" for s in stacks)


def test_perf_script_is_parsed_into_periods_and_frames():
    samples = account.parse_perf_script(_script(SEND, PYTHON))
    assert [p for p, _f in samples] == [250000, 250000]
    assert samples[0][1][0] == ("__ip_select_ident", "[kernel.kallsyms]")
    assert samples[0][1][-1] == ("__libc_sendto", "/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert samples[1][1][0] == ("_PyObject_GenericGetAttrWithDict", "/usr/bin/python3.11")


def test_each_sample_gets_its_syscall_and_cause():
    def cls(stack):
        return account.classify(account.parse_perf_script(_script(stack))[0][1])
    assert cls(SEND) == ("sendto", account.CAUSES[1])
    assert cls(RST_IN_SENDTO) == ("sendto", account.CAUSES[6])
    assert cls(CLIENT_TCP) == ("sendto", account.CAUSES[7])
    assert cls(PYTHON) == (None, account.CAUSES[0])
    assert cls(RECV) == ("recvfrom", account.CAUSES[3])
    assert cls(FAULT) == (None, account.CAUSES[13])


def test_account_sorts_cpu_into_microseconds_per_connection():
    text = _script(SEND, SEND, RST_IN_SENDTO, PYTHON, PYTHON, PYTHON, PYTHON, RECV)
    a = account.account(account.parse_perf_script(text), conns=10)
    assert a["samples"] == 8 and a["sampled_cpu_s"] == 0.002
    assert a["sampled_us_per_conn"] == 200.0
    assert a["by_cause_us_per_conn"][account.CAUSES[0]] == 100.0
    assert a["by_cause_us_per_conn"][account.CAUSES[1]] == 50.0
    assert a["by_syscall_us_per_conn"] == {"(user space)": 100.0, "sendto": 75.0,
                                           "recvfrom": 25.0}
    assert a["user_space_by_library_us_per_conn"] == {"interpreter (CPython)": 100.0}
    assert list(a["by_cause_us_per_conn"])[0] == account.CAUSES[0]     # largest first
    assert a["top_kernel_functions_us_per_conn"]["__ip_select_ident"] == 50.0
    clean = account.scaled(a["by_cause_us_per_conn"], 100.0)      # a round without perf
    assert clean[account.CAUSES[0]] == 50.0 and sum(clean.values()) == 100.0
    assert account.scaled({}, 100.0) == {} and account.scaled(clean, None) == {}


def test_perf_trace_and_strace_summaries():
    perf = """
 Summary of events:

 python3 (5468), 72375 events, 100.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   sendto             18000      0   732.018     0.018     0.041     1.708      0.50%
   recvfrom           18003      5   414.043     0.013     0.023     1.601      0.63%
   epoll_wait            79      0    31.292     0.000     0.396     8.112     35.68%
"""
    calls = account.parse_perf_trace_summary(perf)
    assert calls["sendto"] == {"calls": 18000, "errors": 0, "total_ms": 732.018,
                               "avg_us": 40.67}
    assert calls["recvfrom"]["errors"] == 5
    assert account.per_connection(calls, 3000) == {"recvfrom": 6.0, "sendto": 6.0,
                                                   "epoll_wait": 0.03}
    strace = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 83.38    0.303362        3792        80        40 wait4
  2.30    0.008358           8       957           mmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.363826          40      9094      1357 total
"""
    s = account.parse_strace_summary(strace)
    assert s == {"wait4": {"calls": 80, "errors": 40, "total_ms": 303.362, "avg_us": 3792.03},
                 "mmap": {"calls": 957, "errors": 0, "total_ms": 8.358, "avg_us": 8.73}}


def test_rst_rule_counter_is_found_by_its_arguments(tmp_path):
    listing = """-P OUTPUT ACCEPT -c 0 0
-A OUTPUT -p tcp -m tcp --sport 8081 --tcp-flags RST RST -c 5 200 -j DROP
-A OUTPUT -p tcp -m tcp --sport 80 --tcp-flags RST RST -m mark ! --mark 0x5e -c 36000 1440000 -j DROP
"""
    assert account.rule_packets(listing, rst_rule()) == 36000
    assert account.rule_packets(listing, rst_rule(port=81)) is None
    raw = "-P PREROUTING ACCEPT -c 9 9\n-A PREROUTING -d 192.168.56.100/32 -p tcp -m tcp " \
          "--dport 80 -c 12 480 -j DROP\n"
    assert account.rule_packets(raw, quiet_rule()) == 12
    softirqs = tmp_path / "softirqs"
    softirqs.write_text("                    CPU0       CPU1\n"
                        "          HI:          1          2\n"
                        "      NET_RX:        100        250\n")
    before = account.read_softirqs(str(softirqs))
    assert before == {"HI": 3, "NET_RX": 350}
    assert account.delta(before, {"HI": 3, "NET_RX": 400}) == {"HI": 0, "NET_RX": 50}
    assert account.read_softirqs(str(tmp_path / "none")) == {}
