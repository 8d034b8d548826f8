"""Scenario text -> :class:`harness.judge.model.Scenario`, every mistake a ScenarioError.

The header's ``key: value`` lines each have one reader (:data:`_HEADER_READERS`); the expect
lines are read by :class:`_LineParser`; checks that need several keys come last
(:func:`_check_header`).  The ``responder:`` line is validated by the responder's own argument
parser (``responder.cli.build_parser``), not by a copy of it.  Every number, duration, count
and payload is bounded (``harness.judge.model``'s MAX_*), so no scenario can make a run
unbounded or the parser slow.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
from pathlib import Path

from harness.judge.dissect import ACK, ANALYSIS_FLAGS, SYN
from harness.judge.lexer import (duration, factor, integer, parse_flag_spec, parse_options_spec,
                                 quoted, split_top, strip_comment, value)
from harness.judge.model import (CLIENT_OPTION_VALUES, CLIENT_OPTIONS, CLIENTS, COUNTER_OPS,
                                 DIRECTIONS, FIELDS, HEADER_KEYS, KNOWN_BACKENDS, MAX_CLIENTS,
                                 MAX_COUNT, MAX_FIELD_CHARS, MAX_LINE_CHARS, MAX_NUMBER,
                                 MAX_PAYLOAD, MAX_SECONDS, STEPS, Condition, CounterCheck, Expect,
                                 Measure, Scenario, ScenarioError, Step, Timing)
from responder.contract import CLASSIC_ISN, LAB_PORT, STATE_NAMES, VM_IP

#: Responder options a scenario may not give (the parser knows them), and why.
NOT_FROM_A_SCENARIO = {
    "listen": "--listen is set by the harness, not by the scenario",
    "fault": "--fault is the harness's switch (invoke demo --fault NAME), not the scenario's",
    "table": "--table prints the state table and exits: nothing would answer",
    "connect": "--connect would make the responder open a connection of its own; the "
               "scenario's client is its 'client:' line",
    "http_file": "--http-file would make the responder serve a file of the lab machine",
}
MAX_STEPS = 200


# ---------------------------------------------------------------- the responder's arguments

def _strict_parser() -> argparse.ArgumentParser:
    """``responder.cli.build_parser()`` that raises ValueError instead of printing and exiting."""
    from responder.cli import build_parser
    p = build_parser()

    def error(message):
        raise ValueError(f"{message} (see python3 -m responder --help)")

    def leave(status=0, message=None):
        raise ValueError("-h/--help is not a responder argument for a scenario")
    p.error, p.exit, p.print_help = error, leave, lambda file=None: None
    return p


def responder_args(text: str) -> tuple[tuple, int | None]:
    """Validate a scenario's ``responder:`` value with the responder's own parser; returns the
    arguments (as written) and the fixed ISN they give (``--isn``, or ``--classic``'s)."""
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None
    listen = f"{VM_IP}:{LAB_PORT}"
    parser = _strict_parser()
    opts = parser.parse_args(["--listen", listen, *args])
    defaults = parser.parse_args(["--listen", listen, "--app", opts.app])
    for dest, why in NOT_FROM_A_SCENARIO.items():
        if getattr(opts, dest) != getattr(defaults, dest):
            raise ValueError(why)
    for name, n in (("--isn", opts.isn), ("--mark", opts.mark)):
        if n is not None and not 0 <= n <= MAX_NUMBER:
            raise ValueError(f"{name} must be 0..{MAX_NUMBER:#x}, got {n}")
    if not (math.isfinite(opts.msl2) and 0 <= opts.msl2 <= MAX_SECONDS):
        raise ValueError(f"--msl2 must be 0..{MAX_SECONDS:g} seconds, got {opts.msl2}")
    isn = opts.isn if opts.isn is not None else (CLASSIC_ISN if opts.classic else None)
    return tuple(args), isn


# ---------------------------------------------------------------- header keys

def _client(text: str, head: dict) -> None:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None
    if not words or words[0] not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)} "
                         f"(optionally with options), got {text!r}")
    kind, allowed = words[0], CLIENT_OPTIONS[words[0]]
    shown = ", ".join(f"{o} N" if o in CLIENT_OPTION_VALUES else o for o in allowed)
    i = 1
    while i < len(words):
        if words[i] not in allowed:
            raise ValueError(f"{kind} option {words[i]!r} is not allowed in a scenario "
                             f"(allowed: {shown or 'none'})")
        if words[i] in CLIENT_OPTION_VALUES:
            limit = CLIENT_OPTION_VALUES[words[i]]
            n = words[i + 1] if i + 1 < len(words) else ""
            if not re.fullmatch(r"\d{1,5}", n) or int(n) > limit:
                raise ValueError(f"{words[i]} needs a number 0..{limit}, got {n or 'nothing'!r}")
            i += 1
        i += 1
    head["client"], head["client_args"] = kind, tuple(words[1:])


def _responder(text: str, head: dict) -> None:
    head["responder"] = text
    head["responder_args"], head["isn"] = responder_args(text)


def _clients(text: str, head: dict) -> None:
    if not re.fullmatch(r"\d{1,2}", text) or not 1 <= int(text) <= MAX_CLIENTS:
        raise ValueError(f"expected a number of clients 1..{MAX_CLIENTS}, got {text!r}")
    head["clients"] = int(text)


def _trailing(text: str, head: dict) -> None:
    if text not in ("forbid", "allow"):
        raise ValueError(f"expected forbid or allow, got {text!r}")
    head["trailing"] = text


def _backends(text: str, head: dict) -> None:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in KNOWN_BACKENDS]
    if not names or unknown:
        raise ValueError(f"expected a comma-separated list of {', '.join(KNOWN_BACKENDS)}, "
                         f"got {text!r}")
    head["backends"] = names


def _cpu(text: str, head: dict) -> None:
    if text not in ("alone", "shared"):
        raise ValueError(f"expected alone or shared, got {text!r}")
    head["cpu_alone"] = text == "alone"


def _counter(text: str) -> CounterCheck:
    m = re.fullmatch(r"\s*([a-z_]{1,40})\s*(==|!=|>=|<=|>|<)\s*(\d{1,10})\s*", text)
    if not m:
        raise ValueError(f"expected 'NAME OP N' (OP one of {' '.join(COUNTER_OPS)}), "
                         f"got {text.strip()[:80]!r}")
    return CounterCheck(m.group(1), m.group(2), int(m.group(3)))


def _counters(text: str, head: dict) -> None:
    parts = split_top(text)
    if any(not p.strip() for p in parts):
        raise ValueError("empty item (two commas?)")
    head["counters"] = tuple(_counter(p) for p in parts)


def parse_states(text: str) -> tuple:
    """``ESTABLISHED => FIN-WAIT-1, FIN-WAIT-1 => FIN-WAIT-2`` -> pairs, checked by name."""
    out = []
    for part in split_top(text):
        m = re.fullmatch(r"\s*(\S+)\s*=>\s*(\S+)\s*", part)
        if not m:
            raise ValueError(f"expected 'STATE => STATE', got {part.strip()[:80]!r}")
        for name in m.groups():
            if name not in STATE_NAMES:
                raise ValueError(f"unknown state {name[:40]!r} "
                                 f"(known: {', '.join(STATE_NAMES)})")
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def parse_script(text: str) -> tuple:
    """``send "GET / HTTP/1.0\\r\\n"; sleep 0.2s; recv-all`` -> steps (client-agnostic; which
    steps a client accepts is checked once the whole header is read)."""
    steps = []
    for part in split_top(text, ";"):
        part = part.strip()
        if not part:
            raise ValueError("empty step (two semicolons?)")
        steps.append(_step(part))
    if len(steps) > MAX_STEPS:
        raise ValueError(f"{len(steps)} steps is more than {MAX_STEPS}")
    sent = sum(len(s.arg) for s in steps if s.kind == "send")
    if sent > MAX_PAYLOAD:
        raise ValueError(f"the script sends {sent} bytes, more than the {MAX_PAYLOAD} a "
                         f"scenario may send")
    return tuple(steps)


def _step(part: str) -> Step:
    kind, _, arg = part.partition(" ")
    arg = arg.strip()
    if kind == "send":
        return Step("send", quoted(arg))
    if kind == "sleep":
        return Step("sleep", duration(arg))
    if kind in ("recv", "rst", "syn"):
        if kind == "recv" and not arg:
            raise ValueError("recv needs a byte count, e.g. 'recv 5' (or use recv-all)")
        limit = MAX_PAYLOAD if kind == "recv" else 1 << 31
        try:
            return Step(kind, integer(arg, limit) if arg else 0)
        except ValueError as exc:
            raise ValueError(f"{kind} takes a number 0..{limit}, got {arg[:40]!r}"
                             + (f" ({exc})" if str(exc) else "")) from None
    if kind in ("recv-all", "shutdown", "close", "connect", "wait-fin", "fin", "ack",
                "syn-badsum"):
        if arg:
            raise ValueError(f"{kind} takes no argument, got {arg[:40]!r}")
        return Step(kind)
    known = sorted({k for ks in STEPS.values() for k in ks})
    raise ValueError(f"unknown step {kind[:40]!r} (known: {', '.join(known)})")


_DROP = re.compile(r"drop\s+(c>s|s>c)(?:\s+(ack|seq)\s+(\d{1,10}))?\s+first\s+(\d{1,6})")
#: The client's pure ACKs, whatever their numbers (no fixed ISN needed: a submission's own).
_DROP_ACK_ONLY = re.compile(r"drop\s+c>s\s+ack-only\s+first\s+(\d{1,6})")
_NETEM = re.compile(r"(delay|loss)\s+(\d{1,6}(?:\.\d{1,3})?(?:ms|s|%))")


def parse_conditions(text: str) -> tuple:
    """``drop c>s ack 6 first 3; delay 100ms`` -> conditions (at most MAX_COUNT drops)."""
    out = []
    for part in split_top(text, ";"):
        t = part.strip()
        if not t:
            continue
        if len(t) > MAX_FIELD_CHARS:
            raise ValueError(f"condition of {len(t)} characters (at most {MAX_FIELD_CHARS})")
        out.append(_condition(t))
    dropped = sum(c.count for c in out)
    if dropped > MAX_COUNT:
        raise ValueError(f"the conditions drop {dropped} packets, more than {MAX_COUNT}")
    return tuple(out)


def _condition(t: str) -> Condition:
    m = _DROP_ACK_ONLY.fullmatch(t)
    if m:
        return Condition("drop", "c>s", "ack-only", 0, int(m.group(1)), text=t)
    m = _DROP.fullmatch(t)
    if m:
        if m.group(2) == "ack" and m.group(1) == "s>c" or \
                m.group(2) == "seq" and m.group(1) == "c>s":
            raise ValueError(f"{t!r}: only 'c>s ack N' and 's>c seq N' are known (numbers "
                             "in the responder's sequence space, which a fixed --isn pins)")
        n = int(m.group(3) or 0)
        if n > MAX_NUMBER:
            raise ValueError(f"{t!r}: {n} is not a 32-bit sequence number")
        return Condition("drop", m.group(1), m.group(2) or "", n, int(m.group(4)), text=t)
    m = _NETEM.fullmatch(t)
    if m:
        return Condition(m.group(1), amount=m.group(2), text=t)
    raise ValueError(f"unknown condition {t!r} (known: 'drop c>s [ack N] first K', "
                     "'drop c>s ack-only first K', 'drop s>c [seq N] first K', "
                     "'delay 100ms', 'loss 10%')")


def _conditions(text: str, head: dict) -> None:
    head["conditions"], head["condition_list"] = text, parse_conditions(text)


def _store(key, convert=lambda v: v):
    def read(text: str, head: dict) -> None:
        head[key] = convert(text)
    return read


#: key -> reader(value, head); every key in HEADER_KEYS has one.
_HEADER_READERS = {
    "lesson": _store("lesson"), "responder": _responder, "client": _client,
    "clients": _clients, "stdin": _store("stdin", quoted), "script": _store("script",
                                                                            parse_script),
    "conditions": _conditions, "timeout": _store("timeout", duration),
    "hold": _store("hold", duration), "linger": _store("linger", duration),
    "trailing": _trailing, "counters": _counters, "states": _store("states", parse_states),
    "measure": _store("measure"), "backends": _backends, "cpu": _cpu,
}
assert set(_HEADER_READERS) == set(HEADER_KEYS)


# ---------------------------------------------------------------- expect lines

_HEAD = re.compile(r"(?:@(?P<label>[A-Za-z_][\w-]*)\s+)?(?:(?P<maybe>maybe)\s+)?"
                   r"(?P<dir>\S+)\s+\[(?P<flags>[^\]]*)\]\s*(?P<rest>.*)$")


class _LineParser:
    """Parses one expect line; knows the earlier lines for ``after`` references."""

    def __init__(self, path, lineno, index, earlier, labels):
        self.path, self.lineno, self.index = path, lineno, index
        self.earlier, self.labels = earlier, labels

    def fail(self, field, msg):
        what = f"field '{field}': " if field else ""
        raise ScenarioError(self.path, self.lineno, what + msg)

    def parse(self, text: str) -> Expect:
        m = _HEAD.match(text.strip())
        if not m:
            self.fail(None, f"expected 'c>s [FLAGS] fields...' or 's>c [FLAGS] ...', "
                            f"got {text.strip()[:80]!r}")
        if m["dir"] not in DIRECTIONS:
            self.fail("direction", f"expected c>s or s>c, got {m['dir'][:40]!r}")
        try:
            flags, maybe_flags = parse_flag_spec(m["flags"])
        except ValueError as exc:
            self.fail("flags", str(exc))
        label = m["label"]
        if m["maybe"] and m["dir"] != "s>c":
            self.fail("maybe", "only a responder line (s>c) can be 'maybe': client lines "
                               "already state only what TCP guarantees")
        if label and label in self.labels:
            self.fail("label", f"@{label} already names line {self.labels[label][0]}")
        e = self._fields(self._pieces(m["rest"].strip()))
        e.update(lineno=self.lineno, index=self.index, text=text.strip(), label=label,
                 direction=m["dir"], flags=flags, flags_text=m["flags"].strip(),
                 flags_maybe=maybe_flags, optional=bool(m["maybe"]))
        self._consistency(e)
        return Expect(**e)

    def _pieces(self, rest: str) -> dict:
        kw = {}
        try:
            pieces = split_top(rest) if rest else []
        except ValueError as exc:
            self.fail(None, str(exc))
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                self.fail(None, "empty field (two commas?)")
            name, _, val = piece.partition(" ")
            if name not in FIELDS:
                self.fail(name[:40], f"unknown field (known: {', '.join(FIELDS)})")
            if name in kw:
                self.fail(name, "given twice")
            kw[name] = val.strip()
        return kw

    def _fields(self, kw: dict) -> dict:
        e: dict = {}
        for name, val in kw.items():
            try:
                getattr(self, "_f_" + name)(val, e)
            except ValueError as exc:
                self.fail(name, str(exc) or f"bad value {val[:80]!r}")
        return e

    def _f_seq(self, v, e):
        m = re.fullmatch(r"(\d{1,10})(?::(\d{1,10}))?", v)
        if not m:
            raise ValueError(f"expected N or N:M, got {v[:40]!r}")
        e["seq"] = int(m.group(1))
        if m.group(2) is not None:
            if int(m.group(2)) < e["seq"]:
                raise ValueError(f"end before start in {v!r}")
            self._set_length(e, int(m.group(2)) - e["seq"], "seq")

    def _f_rawseq(self, v, e):
        e["rawseq"] = self._number(v, "N or 0xHEX")

    def _f_ack(self, v, e):
        e["ack"] = self._number(v, "N")

    @staticmethod
    def _number(v, what):
        try:
            return integer(v)
        except ValueError:
            raise ValueError(f"expected {what} (at most {MAX_NUMBER:#x}), got {v[:40]!r}") \
                from None

    def _f_win(self, v, e):
        e["win"] = value(v, allow=("exact", "any", "range", "echo"))

    def _f_options(self, v, e):
        e["options"] = parse_options_spec(v)

    def _f_length(self, v, e):
        self._set_length(e, self._number(v, "N"), "length")

    def _f_payload(self, v, e):
        e["payload"] = quoted(v)
        self._set_length(e, len(e["payload"]), "payload")

    def _f_analysis(self, v, e):
        names = v.split()
        if names == ["none"]:
            e["analysis"] = frozenset()
            return
        bad = [n[:40] for n in names if n not in ANALYSIS_FLAGS]
        if not names or bad:
            raise ValueError(f"unknown analysis flag {' '.join(bad[:3]) or '(none given)'!r} "
                             f"(known: none, {', '.join(sorted(ANALYSIS_FLAGS))})")
        e["analysis"] = frozenset(names)

    def _f_after(self, v, e):
        if len(v) > MAX_FIELD_CHARS:
            raise ValueError(f"{len(v)} characters (an 'after REF within LO-HI' is short: at "
                             f"most {MAX_FIELD_CHARS})")
        words = v.split(None, 2)
        if len(words) != 3 or words[1] != "within":
            raise ValueError(f"expected 'after REF within LO-HIs', got {v!r}")
        ref_text, bounds = words[0], words[2]
        ref = self._ref(ref_text)
        lo_text, dash, hi_text = (s.strip() for s in bounds.partition("-"))
        if not dash:
            lo_text, hi_text = "", lo_text
        if hi_text.endswith("x"):
            if self.earlier[ref].timing is None:
                raise ValueError(f"{ref_text} has no 'after' of its own: a relative bound "
                                 f"(Nx) is a multiple of that line's interval")
            lo = factor(lo_text if lo_text.endswith("x") else (lo_text or "0") + "x")
            hi, relative = factor(hi_text), True
        else:
            hi, relative = duration(hi_text), False
            unit = "ms" if hi_text.endswith("ms") else "s"
            lo = duration(lo_text if lo_text.endswith("s") else (lo_text or "0") + unit) \
                if lo_text else 0.0
        if lo > hi:
            raise ValueError(f"empty interval {bounds}")
        e["timing"] = Timing(ref, ref_text, lo, hi, relative=relative)

    def _ref(self, ref_text: str) -> int:
        if ref_text == "prev":
            ref = self.index - 2
        elif ref_text.startswith("@"):
            if ref_text[1:] not in self.labels:
                raise ValueError(f"no earlier line is labelled {ref_text}")
            ref = self.labels[ref_text[1:]][1]
        elif re.fullmatch(r"\d{1,6}", ref_text):
            ref = int(ref_text) - 1
        else:
            raise ValueError(f"REF must be @label, prev or an expect-line number, "
                             f"got {ref_text!r}")
        if not 0 <= ref < self.index - 1:
            raise ValueError(f"{ref_text} is not an earlier expect line")
        return ref

    def _set_length(self, e, n, field):
        if e.get("length") is not None and e["length"] != n:
            raise ValueError(f"length {n} contradicts length {e['length']} given by "
                             f"{e['length_from']}")
        e["length"] = n
        e.setdefault("length_from", field)

    def _consistency(self, e):
        e.pop("length_from", None)
        if e.get("ack") is not None and not e["flags"] & ACK:
            self.fail("ack", f"ack given but flags [{e['flags_text']}] have no '.'")
        if e["flags"] & SYN and e.get("seq") not in (None, 0) and e["direction"] == "s>c":
            # (a client SYN may be a stray one in the middle of the connection: RFC 5961 4)
            self.fail("seq", "a SYN has relative seq 0")


# ---------------------------------------------------------------- the file

class _Reader:
    """One pass over the file's lines: the header into ``head``, then the expect lines."""

    def __init__(self, path: str):
        self.path = path
        self.head: dict = {}
        self.seen: dict[str, int] = {}
        self.expects: list[Expect] = []
        self.labels: dict[str, tuple[int, int]] = {}
        self.in_expect = False

    def line(self, lineno: int, raw: str) -> None:
        if len(raw) > MAX_LINE_CHARS:
            raise ScenarioError(self.path, lineno, f"line of {len(raw)} characters (at most "
                                                   f"{MAX_LINE_CHARS})")
        line = strip_comment(raw).rstrip()
        if not line.strip():
            return
        if self.in_expect:
            exp = _LineParser(self.path, lineno, len(self.expects) + 1, self.expects,
                              self.labels).parse(line)
            if exp.label:
                self.labels[exp.label] = (lineno, len(self.expects))
            self.expects.append(exp)
        else:
            self.header_line(lineno, line)

    def header_line(self, lineno: int, line: str) -> None:
        fail = lambda msg: ScenarioError(self.path, lineno, msg)  # noqa: E731
        key, colon, val = line.partition(":")
        key = key.strip()
        if re.match(r"\s*(@\S+\s+)?(maybe\s+)?(c>s|s>c)\s", line):
            raise fail("expect line before the 'expect:' line")
        if not colon or not re.fullmatch(r"[A-Za-z_-]{1,40}", key):
            raise fail(f"expected 'key: value' or 'expect:', got {line.strip()[:80]!r}")
        if key == "expect":
            if val.strip():
                raise fail("'expect:' stands alone on its line")
            self.in_expect = True
            return
        if key not in HEADER_KEYS:
            raise fail(f"unknown key '{key}' (known: {', '.join(HEADER_KEYS)}, expect)")
        if key in self.seen:
            raise fail(f"key '{key}' already given on line {self.seen[key]}")
        self.seen[key] = lineno
        try:
            _HEADER_READERS[key](val.strip(), self.head)
        except ValueError as exc:
            raise fail(f"key '{key}': {exc}") from None


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Parse scenario text; ``path`` is only used in names and messages."""
    r = _Reader(path)
    for lineno, raw in enumerate(text.splitlines(), 1):
        r.line(lineno, raw)
    head, seen = r.head, r.seen
    if "responder" not in head:
        raise ScenarioError(path, None, "missing key 'responder' (e.g. 'responder: --app hello')")
    if not r.in_expect:
        raise ScenarioError(path, None, "missing 'expect:' section")
    if not r.expects:
        raise ScenarioError(path, None, "'expect:' section has no lines")
    _check_header(path, head, seen)
    measures = ()
    if "measure" in head:
        try:
            measures = _measures(head["measure"], r.labels)
        except ValueError as exc:
            raise ScenarioError(path, seen["measure"], f"key 'measure': {exc}") from None
    return Scenario(
        path=path, name=Path(path).stem, lesson=head.get("lesson", ""),
        responder=head["responder"], responder_args=head["responder_args"],
        client=head.get("client", "nc"), client_args=head.get("client_args", ()),
        stdin=head.get("stdin", b""), conditions=head.get("conditions", ""),
        timeout=head.get("timeout"), trailing=head.get("trailing", "forbid"),
        expects=tuple(r.expects), script=head.get("script", ()), hold=head.get("hold"),
        linger=head.get("linger", 0.0), counters=head.get("counters", ()),
        states=head.get("states", ()), measures=measures,
        condition_list=head.get("condition_list", ()),
        backends=head.get("backends", KNOWN_BACKENDS), clients=head.get("clients", 1),
        isn=head.get("isn"), cpu_alone=head.get("cpu_alone", False))


def _check_header(path: str, head: dict, seen: dict) -> None:
    """Checks that need several keys: the script's steps against the client kind, stdin
    against script, a condition's sequence number against a fixed ISN."""
    client = head.get("client", "nc")
    for step in head.get("script", ()):
        if step.kind not in STEPS[client]:
            raise ScenarioError(path, seen["script"], f"key 'script': the {client} client "
                                f"cannot '{step.kind}' (it can: {', '.join(STEPS[client])})")
    if "script" in head and "stdin" in head:
        raise ScenarioError(path, seen["script"], "key 'script': give either stdin or a script "
                            f"(stdin is on line {seen['stdin']})")
    if "stdin" in head and client != "nc":
        raise ScenarioError(path, seen["stdin"], f"key 'stdin': only nc reads stdin; the "
                            f"{client} client takes a script")
    for c in head.get("condition_list", ()):
        if c.field in ("ack", "seq") and head.get("isn") is None:
            raise ScenarioError(path, seen["conditions"], f"key 'conditions': {c.text!r} names "
                                "a sequence number, which needs a fixed ISN "
                                "(responder: ... --isn N)")


def _measures(text: str, labels: dict) -> tuple:
    out = []
    for part in split_top(text):
        m = re.fullmatch(r"\s*([A-Za-z_][\w-]{0,40})\s+@([\w-]{1,40})\s+@([\w-]{1,40})\s*", part)
        if not m:
            raise ValueError(f"expected 'NAME @from @to', got {part.strip()[:80]!r}")
        for lab in m.group(2, 3):
            if lab not in labels:
                raise ValueError(f"no expect line is labelled @{lab}")
        out.append(Measure(m.group(1), labels[m.group(2)][1], labels[m.group(3)][1],
                           part.strip()))
    return tuple(out)
