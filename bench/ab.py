"""Alternating rounds of responder variants against the kernel reference, on an existing lab:
how an optimisation is decided (issue 13: "each change is kept only if the bench shows it").

    sudo .venv/bin/python -m bench.ab --prefix LAB --rounds 5 \\
        "cpython:--io socket" "cpython:--io mmsg" "pypy:--io socket" "pypy:--io mmsg"

Each variant is ``RUNTIME:RESPONDER ARGS`` (``--app hello`` is added); ``RUNTIME+quiet``
also keeps the VM kernel from seeing the lab port's segments while that variant runs
(``responder.contract.quiet_rule``: ``iptables -t raw -I PREROUTING -d VM -p tcp --dport 80
-j DROP`` in the VM namespace) and starts the responder with ``--rx packet``, the one receive
path that still sees them.  In every round each
variant and the kernel + asyncio hello server run once (the lab is re-provisioned first if the
responder's sources changed), in an order rotated per round, each
warmed up first (``--warmup``) and then loaded (``-n``, ``-c``) as ``invoke bench``'s item 1
does.  Prints per variant: conn/s, the server's and the load generator's CPU per connection
and the per-round ratio to the kernel's conn/s, each as median [min-max]; ``--json FILE`` keeps every round.  The machine is
shared: read ratios, not absolute figures, and compare the load averages printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.lab import get_backend
from harness.lab.provision import bring_up
from harness.util import LabError, require_root

from .runner import FULL, PORT_KERNEL_HELLO, Bench, _loadavg, check_runtimes
from .stats import ratios, summarize


def parse_variant(text: str) -> tuple:
    """``(runtime, responder args, quiet)`` from ``RUNTIME[+quiet]:ARGS``."""
    runtime, _, args = text.partition(":")
    runtime, plus, what = runtime.partition("+")
    if plus and what != "quiet":
        raise LabError(f"variant {text!r}: after + only 'quiet' is known")
    check_runtimes([runtime])
    return runtime, shlex.split(args), bool(plus)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("variants", nargs="+", metavar="RUNTIME:ARGS")
    p.add_argument("--prefix", required=True, help="an existing, provisioned netns lab")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-n", type=int, default=5000, help="timed connections per load")
    p.add_argument("-c", type=int, default=50, help="at once")
    p.add_argument("--warmup", type=int, default=FULL.warmup_n, help="untimed connections first")
    p.add_argument("--json", metavar="FILE", help="write every round here")
    a = p.parse_args(argv)
    try:
        require_root("bench.ab")
        variants = {text: parse_variant(text) for text in a.variants}
        backend = get_backend("netns", a.prefix)
        if not backend.exists():
            raise LabError(f"no lab '{a.prefix}': make one with invoke up --prefix {a.prefix}")
        bring_up(backend)           # re-provisions if the responder's sources changed
        params = replace(FULL, hello_n=a.n, hello_c=a.c, warmup_n=a.warmup)
        load_before = _loadavg()
        with tempfile.TemporaryDirectory(prefix="tcplab-ab-") as tmp:
            b = Bench(backend, params, Path(tmp))
            targets = {"kernel": lambda: b.kernel("hello", PORT_KERNEL_HELLO)}
            how = {"kernel": (PORT_KERNEL_HELLO, "hello", a.n, a.c)}
            for text, (rt, args, quiet) in variants.items():
                targets[text] = lambda rt=rt, args=args, quiet=quiet: b.responder(
                    "hello", runtime=rt, args=args, quiet=quiet)
                how[text] = (80, "hello", a.n, a.c)
            res = b.rounds(targets, how, a.rounds)
    except LabError as e:
        print(f"bench.ab: {e}", file=sys.stderr)
        return 2
    print(f"load average {load_before} before, {_loadavg()} after; {a.rounds} rounds of "
          f"{a.n} connections ({a.c} at once) after {a.warmup} warm-up ones")
    kernel_cps = [r.get("conn_per_s") for r in res["kernel"]]
    for name, rounds in res.items():
        cps = [r.get("conn_per_s") for r in rounds]
        cpu = [r.get("server_cpu_us_per_conn") for r in rounds]
        gen = [r.get("loadgen_cpu_us_per_conn") for r in rounds]
        line = (f"{name:28} conn/s {_fmt(summarize(cps))}  server CPU us/conn "
                f"{_fmt(summarize(cpu))}  load generator's {_fmt(summarize(gen))}")
        if name != "kernel":
            line += f"  vs kernel {_fmt(summarize(ratios(cps, kernel_cps)), 3)}x"
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


def _fmt(s: dict, digits: int = 0) -> str:
    if not s or s.get("median") is None:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])}-{f.format(s['max'])}]"


if __name__ == "__main__":
    sys.exit(main())
