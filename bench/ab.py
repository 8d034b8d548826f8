"""Alternating rounds of responder variants against the kernel reference, on an existing lab:
how an optimisation is decided (issue 13: "each change is kept only if the bench shows it").

    sudo .venv/bin/python -m bench.ab --prefix LAB --rounds 5 \\
        "cpython:--rx socket" "cpython:--rx packet" "pypy@HEAD~1:" "pypy:"

Each variant is ``RUNTIME[+quiet][@REV]:RESPONDER ARGS`` (``--app hello`` is added).
``@REV`` runs the responder's sources as they were at git revision ``REV`` (``git archive``
of ``responder/`` into a temporary directory), so a change to the code is decided the same
way as a change of flags: ``pypy@main:`` against ``pypy:`` (the working tree, as the lab has
it provisioned).  ``RUNTIME+quiet``
also keeps the VM kernel from seeing the lab port's segments while that variant runs
(``responder.contract.quiet_rule``: ``iptables -t raw -I PREROUTING -d VM -p tcp --dport 80
-j DROP`` in the VM namespace) and starts the responder with ``--rx packet``, the one receive
path that still sees them.  In every round each
variant and the kernel + asyncio hello server run once (the lab is re-provisioned first if the
responder's sources changed), in an order rotated per round, each
warmed up first (``--warmup``) and then loaded (``-n``, ``-c``) as ``invoke bench``'s item 1
does.  Prints per variant: conn/s, the server's CPU per connection (and its user-space part: the
kernel samples that split at its 10 ms ticks, only the sum is exact, so read it as a hint) and
the load generator's, and the per-round ratio to the kernel's conn/s, each as median
[min-max]; then each variant's server CPU per connection over that of the first variant
with the same runtime, per round (the paired comparison that decides); ``--json FILE`` keeps every round.  The machine is
shared: read ratios, not absolute figures, and compare the load averages printed.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.lab import LAB_PORT, get_backend
from harness.lab.provision import bring_up
from harness.util import PROJECT_ROOT, LabError, require_root

from .runner import FULL, PORT_KERNEL_HELLO, Bench, _loadavg, check_runtimes
from .stats import ratios, summarize


def parse_variant(text: str) -> tuple:
    """``(runtime, responder args, quiet, revision or None)`` from
    ``RUNTIME[+quiet][@REV]:ARGS``."""
    head, _, args = text.partition(":")
    head, at, rev = head.partition("@")
    if at and not rev:
        raise LabError(f"variant {text!r}: @ needs a git revision, e.g. pypy@HEAD~1:")
    runtime, plus, what = head.partition("+")
    if plus and what != "quiet":
        raise LabError(f"variant {text!r}: after + only 'quiet' is known")
    check_runtimes([runtime])
    return runtime, shlex.split(args), bool(plus), rev or None


def checkout(rev: str, into: Path) -> Path:
    """The responder's sources at git revision ``rev``, unpacked under ``into`` (made readable
    by the unprivileged user the responder becomes: it imports lazily after dropping root;
    the bench's own working directory, with its logs, stays private)."""
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o755)
    where = into / f"rev-{len(list(into.glob('rev-*')))}"
    where.mkdir()
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "responder"],
                                 cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise LabError(f"git archive {rev}: {e.stderr.decode(errors='replace').strip()}") \
            from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where)
    for d in [where, *where.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    return where


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        variants, res, load_before = _alternate(a)
    except LabError as e:
        print(f"bench.ab: {e}", file=sys.stderr)
        return 2
    print(f"load average {load_before} before, {_loadavg()} after; {a.rounds} rounds of "
          f"{a.n} connections ({a.c} at once) after {a.warmup} warm-up ones")
    _print_summaries(res)
    _print_pairs(res, variants)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
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
    return p


def _alternate(a) -> tuple:
    """The rounds on lab ``a.prefix``: ``(variants, {name: [round's load result]}, the load
    average before)``, the kernel's under ``"kernel"``."""
    require_root("bench.ab")
    variants = {text: parse_variant(text) for text in a.variants}
    backend = get_backend("netns", a.prefix)
    if not backend.exists():
        raise LabError(f"no lab '{a.prefix}': make one with invoke up --prefix {a.prefix}")
    bring_up(backend)           # re-provisions if the responder's sources changed
    params = replace(FULL, hello_n=a.n, hello_c=a.c, warmup_n=a.warmup)
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="tcplab-ab-") as tmp, \
            tempfile.TemporaryDirectory(prefix="tcplab-ab-src-") as sources:
        b = Bench(backend, params, Path(tmp))
        targets = {"kernel": lambda: b.kernel("hello", PORT_KERNEL_HELLO)}
        how = {"kernel": (PORT_KERNEL_HELLO, "hello", a.n, a.c)}
        for text, (rt, args, quiet, rev) in variants.items():
            cwd = checkout(rev, Path(sources)) if rev else None
            targets[text] = lambda rt=rt, args=args, quiet=quiet, cwd=cwd: b.responder(
                "hello", runtime=rt, args=args, quiet=quiet, cwd=cwd)
            how[text] = (LAB_PORT, "hello", a.n, a.c)
        res = b.rounds(targets, how, a.rounds)
    return variants, res, load_before


def _print_summaries(res: dict) -> None:
    """Per variant and the kernel: conn/s, CPU per connection, the ratio to the kernel's."""
    kernel_cps = [r.get("conn_per_s") for r in res["kernel"]]
    for name, rounds in res.items():
        cps = [r.get("conn_per_s") for r in rounds]
        cpu = [r.get("server_cpu_us_per_conn") for r in rounds]
        user = [r.get("server_user_cpu_us_per_conn") for r in rounds]
        gen = [r.get("loadgen_cpu_us_per_conn") for r in rounds]
        line = (f"{name:28} conn/s {_fmt(summarize(cps))}  server CPU us/conn "
                f"{_fmt(summarize(cpu))} (user {_fmt(summarize(user))})  load generator's "
                f"{_fmt(summarize(gen))}")
        if name != "kernel":
            line += f"  vs kernel {_fmt(summarize(ratios(cps, kernel_cps)), 3)}x"
        print(line)


def _print_pairs(res: dict, variants: dict) -> None:
    """The paired comparison: each variant's server CPU over that of the first variant with
    the same runtime and receive path, in the same round (the machine's load changes between
    rounds more than within one)."""
    for name, (rt, _args, quiet, _rev) in variants.items():
        base = next(v for v, (r, _a, q, _r) in variants.items() if (r, q) == (rt, quiet))
        if base == name:
            continue
        pair = [[r.get(k) for r in res[v]] for v in (name, base)
                for k in ("server_cpu_us_per_conn", "server_user_cpu_us_per_conn")]
        print(f"{name:28} server CPU per connection / {base!r}'s, per round: "
              f"{_fmt(summarize(ratios(pair[0], pair[2])), 3)}x (user "
              f"{_fmt(summarize(ratios(pair[1], pair[3])), 3)}x)")


def _fmt(s: dict, digits: int = 0) -> str:
    if not s or s.get("median") is None:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])}-{f.format(s['max'])}]"


if __name__ == "__main__":
    sys.exit(main())
