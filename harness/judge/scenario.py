"""Scenario files: an expected TCP exchange written as data, in tcpdump's words.

A scenario (``scenarios/*.scn``) reads like packetdrill's ``.pkt`` scripts or like a tcpdump
transcript with holes in it.  The full format is in ``docs/scenarios.md``; in short::

    # comment
    lesson: The lecture's handshake and three lines, then a proper FIN close.
    responder: --app hello
    client: nc
    stdin: ""
    expect:
    c>s [S]  seq 0, options {mss *,sackOK,TS val * ecr 0,wscale *}, length 0
    s>c [S.] seq 0, ack 1, win 65535, options [mss 1460,sackOK,TS val * ecr echo,nop,wscale 7]
    c>s [.]  ack 1
    @hello s>c [P.] seq 1:12, ack 1, payload "Hello TCP\\n\\0"
    s>c [F.] seq 98, ack 1, after @hello within 0-0.5s

This module only parses and validates; :mod:`harness.match` judges a capture against the
result.  Every error is a :class:`ScenarioError` naming file, line and field.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.lab import BACKENDS as KNOWN_BACKENDS  # a scenario's `backends:` (default: all)
from harness.util import PROJECT_ROOT
from responder.contract import APPS as RESPONDER_APPS, STATE_NAMES
from harness.judge.dissect import ACK, ANALYSIS_FLAGS, CWR, ECE, FIN, PSH, RST, SYN, URG

SCENARIO_DIR = PROJECT_ROOT / "scenarios"
SUFFIX = ".scn"

# Clients the harness knows how to drive (harness/clients.py): the real nc, a Python socket
# client with socket options, a Scapy-crafted peer.  Each accepts these arguments and steps.
CLIENTS = ("nc", "python", "scapy")
CLIENT_OPTIONS = {"python": ("--nodelay", "--no-quickack", "--mss"), "scapy": ("--delayed-ack",)}
CLIENT_OPTION_VALUES = ("--mss",)          # options followed by a number
STEPS = {"nc": ("send", "sleep"),
         "python": ("send", "sleep", "recv", "recv-all", "shutdown", "close"),
         "scapy": ("connect", "send", "sleep", "recv", "wait-fin", "fin", "ack", "rst", "syn",
                   "syn-badsum")}
DIRECTIONS = {"c>s": "client→server", "s>c": "server→client"}
FLAG_CHARS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "U": URG, "E": ECE, "W": CWR, ".": ACK}
HEADER_KEYS = ("lesson", "responder", "client", "stdin", "script", "conditions", "timeout",
               "hold", "linger", "trailing", "counters", "states", "measure", "backends")
COUNTER_OPS = ("==", "!=", ">=", "<=", ">", "<")
FIELDS = ("seq", "rawseq", "ack", "win", "options", "length", "payload", "analysis", "after")


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``str()`` is ``file:line: message``."""

    def __init__(self, path: str, lineno: int | None, message: str):
        self.path, self.lineno, self.message = path, lineno, message
        where = f"{path}:{lineno}" if lineno else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Val:
    """An expected number: ``exact`` N, ``any`` (``*``), ``range`` lo-hi (inclusive),
    ``echo`` (equals a value the peer sent earlier) or ``latest`` (equals the peer's latest)."""

    kind: str
    lo: int = 0
    hi: int = 0

    def __str__(self):
        return {"exact": str(self.lo), "any": "*", "range": f"{self.lo}-{self.hi}",
                "echo": "echo", "latest": "latest"}[self.kind]


ANY = Val("any")


@dataclass(frozen=True)
class OptSpec:
    """One expected option.  ``value`` is ``None`` (nop, eol, sackOK), a :class:`Val` (mss,
    wscale), a pair of :class:`Val` (TS val, ecr) or, for sack, ``ANY`` or a tuple of blocks."""

    name: str
    value: object = None

    def __str__(self):
        if self.name == "TS":
            return f"TS val {self.value[0]} ecr {self.value[1]}"
        if self.name == "sack" and isinstance(self.value, tuple):
            return "sack " + "".join(f"{{{a}:{b}}}" for a, b in self.value)
        return self.name if self.value is None else f"{self.name} {self.value}"


@dataclass(frozen=True)
class OptionsSpec:
    """``exact``: ``[...]``, the list in wire order; ``contains``: ``{...}``, these options in
    any order among others (nop/eol ignored); ``echo``: the same option bytes as some packet the
    peer sent earlier; ``valid``: whatever options, as long as TCP allows them (well formed,
    sane values, and on a SYN only the ones the peer's SYN offered)."""

    mode: str
    items: tuple = ()

    def __str__(self):
        if self.mode in ("echo", "valid"):
            return self.mode
        inner = ",".join(str(i) for i in self.items)
        return f"[{inner}]" if self.mode == "exact" else f"{{{inner}}}"


@dataclass(frozen=True)
class Timing:
    """``after REF within LO-HI``: this packet comes LO..HI seconds after REF's packet.
    ``relative`` (``within 1.6x-2.5x``): LO..HI times REF's own interval (REF's line has an
    ``after`` too) -- "each retransmission waits about twice as long as the one before"."""

    ref: int          # 0-based index of the referenced expect line
    ref_text: str
    lo: float
    hi: float
    relative: bool = False

    def __str__(self):
        if self.relative:
            return f"after {self.ref_text} within {self.lo:g}x-{self.hi:g}x"
        return f"after {self.ref_text} within {self.lo:g}-{self.hi:g}s"


@dataclass(frozen=True)
class Step:
    """One step of the client's ``script``: ``send "..."``, ``sleep 0.5s``, ``recv 5``, ``rst 100``."""

    kind: str
    arg: object = None

    def __str__(self):
        if self.kind == "send":
            return f'send "{c_escape(self.arg)}"'
        if self.kind == "sleep":
            return f"sleep {self.arg:g}s"
        return self.kind if self.arg is None else f"{self.kind} {self.arg}"


@dataclass(frozen=True)
class CounterCheck:
    """``counters: NAME OP N``: one of the responder's exit counters (its JSON line)."""

    name: str
    op: str
    value: int

    def holds(self, actual) -> bool:
        if not isinstance(actual, (int, float)):
            return False
        return {"==": actual == self.value, "!=": actual != self.value,
                ">=": actual >= self.value, "<=": actual <= self.value,
                ">": actual > self.value, "<": actual < self.value}[self.op]

    def __str__(self):
        return f"{self.name} {self.op} {self.value}"


@dataclass(frozen=True)
class Measure:
    """``measure: NAME @a @b``: the time from line @a's packet to line @b's, reported."""

    name: str
    start: int        # 0-based expect-line indexes
    end: int
    text: str


@dataclass(frozen=True)
class Condition:
    """A lab condition applied in the VM for the run (harness/conditions.py).

    ``drop DIR [ack N|seq N] first K``: iptables drops the first K matching packets (c>s in the
    VM's INPUT chain: the capture on the host side still shows them; s>c in its OUTPUT chain:
    they never reach the wire).  ``delay``/``loss`` need ``tc netem``."""

    kind: str                # "drop", "delay", "loss"
    direction: str = ""      # "c>s" or "s>c"
    field: str = ""          # "", "ack" or "seq" (relative; needs a fixed --isn), "ack-only"
    value: int = 0
    count: int = 0
    amount: str = ""         # for netem kinds: "100ms", "10%"
    text: str = ""


@dataclass(frozen=True)
class Expect:
    """One expect line.  ``None`` means "not stated, not checked" — except ``length`` on a
    responder (``s>c``) line, where the matcher treats it as 0 (responder packets are exact)."""

    lineno: int
    index: int              # 1-based position among the expect lines
    text: str
    label: str | None
    direction: str          # "c>s" or "s>c"
    flags: int
    flags_text: str
    seq: int | None = None
    length: int | None = None
    ack: int | None = None
    rawseq: int | None = None
    win: Val | None = None
    options: OptionsSpec | None = None
    payload: bytes | None = None
    analysis: frozenset | None = None   # must be present; empty set = "none"
    timing: Timing | None = None
    flags_maybe: int = 0                # flags written with '?': may be set or not
    optional: bool = False              # 'maybe s>c ...': the responder may send it here, or not

    @property
    def from_server(self) -> bool:
        return self.direction == "s>c"

    @property
    def is_pure_ack(self) -> bool:
        """A client line that only acknowledges: matched cumulatively, consumes nothing."""
        return (self.flags == ACK and not self.length and not self.payload)

    def describe(self) -> str:
        """Short tcpdump-like form for messages: ``[F.] seq 98``, ``[.] ack 99``."""
        out = f"[{self.flags_text}]"
        if self.seq is not None:
            out += f" seq {self.seq}" + (f":{self.seq + self.length}" if self.length else "")
        elif self.ack is not None:
            out += f" ack {self.ack}"
        return out


@dataclass(frozen=True)
class Scenario:
    path: str                # as shown in messages (relative where possible)
    name: str
    lesson: str
    responder: str           # the argument string, as written
    responder_args: tuple
    client: str
    client_args: tuple
    stdin: bytes
    conditions: str
    timeout: float | None
    trailing: str            # "forbid" (default) or "allow" packets after the last line
    expects: tuple
    script: tuple = ()       # Step, ... (the client's actions)
    hold: float | None = None    # the client must still be running after this long; then stopped
    linger: float = 0.0      # wait this long after the client before stopping the capture
    counters: tuple = ()     # CounterCheck, ...
    states: tuple = ()       # ("ESTABLISHED", "FIN-WAIT-1"), ... in this order in the log
    measures: tuple = ()     # Measure, ...
    condition_list: tuple = ()   # Condition, ...
    backends: tuple = KNOWN_BACKENDS  # where the lesson holds (e.g. netns only: timing)

    def runs_on(self, backend: str) -> bool:
        return backend in self.backends

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)


# ---------------------------------------------------------------- small parsers

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}


def c_unescape(s: str) -> bytes:
    """Decode C escapes (``\\n``, ``\\0``, ``\\x41``, octal ``\\101``) into bytes (UTF-8)."""
    out = bytearray()
    i = 0
    while i < len(s):
        ch = s[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        if i + 1 >= len(s):
            raise ValueError("dangling backslash")
        nxt = s[i + 1]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", s[i + 2:])
            if not m:
                raise ValueError("\\x needs hex digits")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return bytes(out)


def c_escape(data: bytes) -> str:
    """Inverse of :func:`c_unescape`, for messages: ``b"Hi\\n\\0"`` -> ``Hi\\n\\0``."""
    out = []
    for b in data:
        ch = chr(b)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch in '\\"':
            out.append("\\" + ch)
        elif b == 0:
            out.append("\\0")
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _quoted(text: str) -> bytes:
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f'expected a "quoted string", got {text!r}')
    return c_unescape(text[1:-1])


def _int(text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
        raise ValueError
    return int(text, 0)


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)", text.strip())
    if not m:
        raise ValueError(f"expected a duration like 1.5s or 200ms, got {text.strip()!r}")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def _val(text: str, *, allow=("exact", "any")) -> Val:
    """N, ``*``, lo-hi, ``echo``, ``latest`` — as far as ``allow`` permits."""
    t = text.strip()
    if t == "*" and "any" in allow:
        return ANY
    if t in ("echo", "latest") and t in allow:
        return Val(t)
    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", t)
    if m and "range" in allow:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise ValueError(f"empty range {t!r}")
        return Val("range", lo, hi)
    try:
        return Val("exact", _int(t))
    except ValueError:
        words = {"exact": "N", "any": "*", "range": "LO-HI", "echo": "echo", "latest": "latest"}
        raise ValueError(f"expected {' or '.join(words[a] for a in allow)}, got {t!r}") from None


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside quotes, [brackets] and {braces}."""
    parts, depth, quote, cur = [], 0, False, []
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            cur.append(ch)
        elif ch in "[{":
            depth += 1
            cur.append(ch)
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r}")
            cur.append(ch)
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quote:
        raise ValueError("unterminated string")
    if depth:
        raise ValueError("unbalanced brackets")
    parts.append("".join(cur))
    return parts


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment that is outside quotes (a whole-line one or after whitespace)."""
    quote = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quote = not quote
        elif ch == "#" and not quote and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_flags(text: str) -> int:
    """tcpdump flag notation (``S``, ``S.``, ``P.``, ``F.``, ``R.``, ``.``) to bits."""
    bits, maybe = parse_flag_spec(text)
    if maybe:
        raise ValueError(f"optional flags ('?') are not allowed here: [{text.strip()}]")
    return bits


#: Flags that an expect line may mark optional with ``?`` (``[P?.]``: PSH may or may not be
#: set).  Not S, R or ``.``: they decide what kind of segment a line is about.
OPTIONAL_FLAG_CHARS = "FPUEW"


def parse_flag_spec(text: str) -> tuple[int, int]:
    """Flags with optional ones: ``P?.`` -> (ACK, PSH): the bits that must be set, and the bits
    that may be set or not (a letter followed by ``?``); every other bit must be clear."""
    t = text.strip()
    if not t:
        raise ValueError("empty flags []")
    bits = maybe = 0
    for i, ch in enumerate(t):
        if ch == "?":
            prev = t[i - 1] if i else ""
            if not prev or prev not in OPTIONAL_FLAG_CHARS:
                raise ValueError(f"'?' must follow one of {' '.join(OPTIONAL_FLAG_CHARS)} in "
                                 f"[{t}] (e.g. [P?.]: PSH may or may not be set)")
            bits &= ~FLAG_CHARS[prev]
            maybe |= FLAG_CHARS[prev]
            continue
        if ch not in FLAG_CHARS:
            raise ValueError(f"unknown flag {ch!r} in [{t}] (use F S R P U E W and .)")
        if (bits | maybe) & FLAG_CHARS[ch]:
            raise ValueError(f"flag {ch!r} twice in [{t}]")
        bits |= FLAG_CHARS[ch]
    return bits, maybe


def _parse_option(text: str) -> OptSpec:
    t = text.strip()
    words = t.split()
    if not words:
        raise ValueError("empty option")
    name = words[0]
    if name in ("nop", "eol", "sackOK") and len(words) == 1:
        return OptSpec(name)
    if name in ("mss", "wscale") and len(words) == 2:
        return OptSpec(name, _val(words[1], allow=("exact", "any", "range")))
    if name == "TS":
        m = re.fullmatch(r"TS\s+val\s+(\S+)\s+ecr\s+(\S+)", t)
        if not m:
            raise ValueError(f"expected 'TS val X ecr Y', got {t!r}")
        allow = ("exact", "any", "range", "echo", "latest")
        return OptSpec("TS", (_val(m.group(1), allow=allow), _val(m.group(2), allow=allow)))
    if name == "sack":
        rest = t[4:].strip()
        if rest == "*":
            return OptSpec("sack", ANY)
        blocks = re.findall(r"\{(\d+):(\d+)\}", rest)
        if not blocks or re.sub(r"\d+\s*|\{\d+:\d+\}|\s", "", rest):
            raise ValueError(f"expected 'sack *' or 'sack {{A:B}}...', got {t!r}")
        return OptSpec("sack", tuple((int(a), int(b)) for a, b in blocks))
    raise ValueError(f"unknown option {t!r} (known: mss, wscale, sackOK, TS, nop, eol, sack)")


def parse_options_spec(text: str) -> OptionsSpec | None:
    """``[...]`` exact, ``{...}`` contains, ``echo``, ``*`` (= not checked, returns None)."""
    t = text.strip()
    if t == "*":
        return None
    if t == "echo":
        return OptionsSpec("echo")
    if t == "valid":
        return OptionsSpec("valid")
    if len(t) >= 2 and (t[0], t[-1]) in (("[", "]"), ("{", "}")):
        inner = t[1:-1].strip()
        items = tuple(_parse_option(p) for p in _split_top(inner)) if inner else ()
        return OptionsSpec("exact" if t[0] == "[" else "contains", items)
    raise ValueError(f"expected [list], {{set}}, echo, valid or *, got {t!r}")


# ---------------------------------------------------------------- the file

_HEAD = re.compile(r"(?:@(?P<label>[A-Za-z_][\w-]*)\s+)?(?:(?P<maybe>maybe)\s+)?"
                   r"(?P<dir>\S+)\s+\[(?P<flags>[^\]]*)\]\s*(?P<rest>.*)$")


def _responder_args(value: str) -> tuple:
    """Validate the responder's arguments against its CLI contract (design.md)."""
    try:
        args = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r}: {exc}") from None
    i, seen = 0, set()
    while i < len(args):
        a = args[i]
        if a in ("--app", "--isn", "--mark", "--msl2"):
            if i + 1 >= len(args):
                raise ValueError(f"{a} needs a value")
            v = args[i + 1]
            if a == "--app" and v not in RESPONDER_APPS:
                raise ValueError(f"--app must be one of {', '.join(RESPONDER_APPS)}, got {v!r}")
            if a == "--msl2":
                try:
                    float(v)
                except ValueError:
                    raise ValueError(f"--msl2 needs seconds, got {v!r}") from None
            elif a != "--app":
                try:
                    _int(v)
                except ValueError:
                    raise ValueError(f"{a} needs a number, got {v!r}") from None
            i += 2
        elif a in ("--classic", "--nodelay"):
            i += 1
        elif a == "--listen":
            raise ValueError("--listen is set by the harness, not by the scenario")
        else:
            raise ValueError(f"unknown responder argument {a!r} "
                             "(known: --app, --classic, --isn, --mark, --nodelay, --msl2)")
        if a in seen:
            raise ValueError(f"{a} given twice")
        seen.add(a)
    if "--app" not in seen:
        raise ValueError("--app is required, e.g. 'responder: --app hello'")
    return tuple(args)


def _header(key: str, value: str, head: dict) -> None:
    if key == "lesson":
        head["lesson"] = value
    elif key == "responder":
        head["responder"] = value
        head["responder_args"] = _responder_args(value)
    elif key == "client":
        words = shlex.split(value)
        if not words or words[0] not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)} "
                             f"(optionally with arguments), got {value!r}")
        known = CLIENT_OPTIONS.get(words[0])
        i = 1
        while known is not None and i < len(words):
            if words[i] not in known:
                raise ValueError(f"unknown {words[0]} client option {words[i]!r} "
                                 f"(known: {', '.join(known) or 'none'})")
            if words[i] in CLIENT_OPTION_VALUES:
                if i + 1 >= len(words) or not words[i + 1].isdigit():
                    raise ValueError(f"{words[i]} needs a number")
                i += 1
            i += 1
        head["client"], head["client_args"] = words[0], tuple(words[1:])
    elif key == "script":
        head["script"] = parse_script(value)
    elif key in ("hold", "linger"):
        head[key] = _duration(value)
    elif key == "counters":
        head["counters"] = tuple(_counter(p) for p in _split_top(value) if p.strip() or _empty())
    elif key == "states":
        head["states"] = parse_states(value)
    elif key == "measure":
        head["measure"] = value
    elif key == "stdin":
        head["stdin"] = _quoted(value)
    elif key == "conditions":
        head["conditions"] = value
        head["condition_list"] = parse_conditions(value)
    elif key == "timeout":
        head["timeout"] = _duration(value)
    elif key == "trailing":
        if value not in ("forbid", "allow"):
            raise ValueError(f"expected forbid or allow, got {value!r}")
        head["trailing"] = value
    elif key == "backends":
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [n for n in names if n not in KNOWN_BACKENDS]
        if not names or unknown:
            raise ValueError(f"expected a comma-separated list of {', '.join(KNOWN_BACKENDS)}, "
                             f"got {value!r}")
        head["backends"] = names


def _empty():
    raise ValueError("empty item (two commas?)")


def parse_script(value: str) -> tuple:
    """``send "GET / HTTP/1.0\\r\\n"; sleep 0.2s; recv-all`` -> steps (client-agnostic; which
    steps a client accepts is checked once the whole header is read)."""
    steps = []
    for part in _split_top(value, ";"):
        part = part.strip()
        if not part:
            raise ValueError("empty step (two semicolons?)")
        kind, _, arg = part.partition(" ")
        arg = arg.strip()
        if kind == "send":
            steps.append(Step("send", _quoted(arg)))
        elif kind == "sleep":
            steps.append(Step("sleep", _duration(arg)))
        elif kind in ("recv", "rst", "syn"):
            if kind == "recv" and not arg:
                raise ValueError("recv needs a byte count, e.g. 'recv 5' (or use recv-all)")
            if arg and not re.fullmatch(r"\d+", arg):
                raise ValueError(f"{kind} takes a number, got {arg!r}")
            steps.append(Step(kind, int(arg) if arg else 0))
        elif kind in ("recv-all", "shutdown", "close", "connect", "wait-fin", "fin", "ack",
                      "syn-badsum"):
            if arg:
                raise ValueError(f"{kind} takes no argument, got {arg!r}")
            steps.append(Step(kind))
        else:
            known = sorted({k for ks in STEPS.values() for k in ks})
            raise ValueError(f"unknown step {kind!r} (known: {', '.join(known)})")
    return tuple(steps)


def _counter(text: str) -> CounterCheck:
    m = re.fullmatch(r"\s*([a-z_]+)\s*(==|!=|>=|<=|>|<)\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected 'NAME OP N' (OP one of {' '.join(COUNTER_OPS)}), "
                         f"got {text.strip()!r}")
    return CounterCheck(m.group(1), m.group(2), int(m.group(3)))


def parse_states(value: str) -> tuple:
    """``ESTABLISHED => FIN-WAIT-1, FIN-WAIT-1 => FIN-WAIT-2`` -> pairs, checked by name."""
    out = []
    for part in _split_top(value):
        m = re.fullmatch(r"\s*(\S+)\s*=>\s*(\S+)\s*", part)
        if not m:
            raise ValueError(f"expected 'STATE => STATE', got {part.strip()!r}")
        for name in m.groups():
            if name not in STATE_NAMES:
                raise ValueError(f"unknown state {name!r} (known: {', '.join(STATE_NAMES)})")
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def parse_conditions(value: str) -> tuple:
    """``drop c>s ack 6 first 3; delay 100ms`` -> conditions."""
    out = []
    for part in _split_top(value, ";"):
        t = part.strip()
        if not t:
            continue
        m = re.fullmatch(r"drop\s+c>s\s+ack-only\s+first\s+(\d+)", t)
        if m:           # no sequence number: works with any ISN (a foreign responder's)
            out.append(Condition("drop", "c>s", "ack-only", 0, int(m.group(1)), text=t))
            continue
        m = re.fullmatch(r"drop\s+(c>s|s>c)(?:\s+(ack|seq)\s+(\d+))?\s+first\s+(\d+)", t)
        if m:
            if m.group(2) == "ack" and m.group(1) == "s>c" or \
                    m.group(2) == "seq" and m.group(1) == "c>s":
                raise ValueError(f"{t!r}: only 'c>s ack N' and 's>c seq N' are known (numbers "
                                 "in the responder's sequence space, which a fixed --isn pins)")
            out.append(Condition("drop", m.group(1), m.group(2) or "",
                                 int(m.group(3) or 0), int(m.group(4)), text=t))
            continue
        m = re.fullmatch(r"(delay|loss)\s+(\d+(?:\.\d+)?(?:ms|s|%))", t)
        if m:
            out.append(Condition(m.group(1), amount=m.group(2), text=t))
            continue
        raise ValueError(f"unknown condition {t!r} (known: 'drop c>s [ack N] first K', "
                         "'drop c>s ack-only first K', 'drop s>c [seq N] first K', "
                         "'delay 100ms', 'loss 10%')")
    return tuple(out)


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
                            f"got {text.strip()!r}")
        if m["dir"] not in DIRECTIONS:
            self.fail("direction", f"expected c>s or s>c, got {m['dir']!r}")
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
        kw = {}
        rest = m["rest"].strip()
        try:
            pieces = _split_top(rest) if rest else []
        except ValueError as exc:
            self.fail(None, str(exc))
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                self.fail(None, "empty field (two commas?)")
            name, _, value = piece.partition(" ")
            if name not in FIELDS:
                self.fail(name, f"unknown field (known: {', '.join(FIELDS)})")
            if name in kw:
                self.fail(name, "given twice")
            kw[name] = value.strip()
        e = self._fields(kw)
        e.update(lineno=self.lineno, index=self.index, text=text.strip(), label=label,
                 direction=m["dir"], flags=flags, flags_text=m["flags"].strip(),
                 flags_maybe=maybe_flags, optional=bool(m["maybe"]))
        self._consistency(e)
        return Expect(**e)

    def _fields(self, kw: dict) -> dict:
        e: dict = {}
        for name, value in kw.items():
            try:
                getattr(self, "_f_" + name)(value, e)
            except ValueError as exc:
                self.fail(name, str(exc) or f"bad value {value!r}")
        return e

    def _f_seq(self, v, e):
        m = re.fullmatch(r"(\d+)(?::(\d+))?", v)
        if not m:
            raise ValueError(f"expected N or N:M, got {v!r}")
        e["seq"] = int(m.group(1))
        if m.group(2) is not None:
            if int(m.group(2)) < e["seq"]:
                raise ValueError(f"end before start in {v!r}")
            self._set_length(e, int(m.group(2)) - e["seq"], "seq")

    def _f_rawseq(self, v, e):
        try:
            e["rawseq"] = _int(v)
        except ValueError:
            raise ValueError(f"expected N or 0xHEX, got {v!r}") from None

    def _f_ack(self, v, e):
        try:
            e["ack"] = _int(v)
        except ValueError:
            raise ValueError(f"expected N, got {v!r}") from None

    def _f_win(self, v, e):
        e["win"] = _val(v, allow=("exact", "any", "range", "echo"))

    def _f_options(self, v, e):
        e["options"] = parse_options_spec(v)

    def _f_length(self, v, e):
        try:
            n = _int(v)
        except ValueError:
            raise ValueError(f"expected N, got {v!r}") from None
        self._set_length(e, n, "length")

    def _f_payload(self, v, e):
        e["payload"] = _quoted(v)
        self._set_length(e, len(e["payload"]), "payload")

    def _f_analysis(self, v, e):
        names = v.split()
        if names == ["none"]:
            e["analysis"] = frozenset()
            return
        bad = [n for n in names if n not in ANALYSIS_FLAGS]
        if not names or bad:
            raise ValueError(f"unknown analysis flag {' '.join(bad) or '(none given)'!r} "
                             f"(known: none, {', '.join(sorted(ANALYSIS_FLAGS))})")
        e["analysis"] = frozenset(names)

    def _f_after(self, v, e):
        m = re.fullmatch(r"(\S+)\s+within\s+(?:(\S+?)\s*-\s*)?(\S+)", v)
        if not m:
            raise ValueError(f"expected 'after REF within LO-HIs', got {v!r}")
        ref_text = m.group(1)
        if ref_text == "prev":
            ref = self.index - 2
        elif ref_text.startswith("@"):
            if ref_text[1:] not in self.labels:
                raise ValueError(f"no earlier line is labelled {ref_text}")
            ref = self.labels[ref_text[1:]][1]
        elif ref_text.isdigit():
            ref = int(ref_text) - 1
        else:
            raise ValueError(f"REF must be @label, prev or an expect-line number, "
                             f"got {ref_text!r}")
        if not 0 <= ref < self.index - 1:
            raise ValueError(f"{ref_text} is not an earlier expect line")
        if m.group(3).endswith("x"):
            if self.earlier[ref].timing is None:
                raise ValueError(f"{ref_text} has no 'after' of its own: a relative bound "
                                 f"(Nx) is a multiple of that line's interval")
            try:
                hi = float(m.group(3)[:-1])
                lo = float((m.group(2) or "0x").rstrip("x"))
            except ValueError:
                raise ValueError(f"expected 'within LOx-HIx' like 1.6x-2.5x, got {v!r}") \
                    from None
            if lo > hi:
                raise ValueError(f"empty interval {m.group(2)}-{m.group(3)}")
            e["timing"] = Timing(ref, ref_text, lo, hi, relative=True)
            return
        hi = _duration(m.group(3))
        if m.group(2) is None:
            lo = 0.0
        else:
            lo_text = m.group(2)
            if not re.search(r"(ms|s)$", lo_text):
                lo_text += re.search(r"(ms|s)$", m.group(3)).group(1)
            lo = _duration(lo_text)
        if lo > hi:
            raise ValueError(f"empty interval {m.group(2)}-{m.group(3)}")
        e["timing"] = Timing(ref, ref_text, lo, hi)

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


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Parse scenario text; ``path`` is only used in names and messages."""
    head: dict = {}
    expects: list[Expect] = []
    labels: dict[str, tuple[int, int]] = {}
    in_expect = False
    seen_keys: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if not in_expect:
            key, colon, value = line.partition(":")
            key = key.strip()
            if re.match(r"\s*(@\S+\s+)?(maybe\s+)?(c>s|s>c)\s", line):
                raise ScenarioError(path, lineno, "expect line before the 'expect:' line")
            if not colon or not re.fullmatch(r"[A-Za-z_-]+", key):
                raise ScenarioError(path, lineno, f"expected 'key: value' or 'expect:', "
                                                  f"got {line.strip()!r}")
            if key == "expect":
                if value.strip():
                    raise ScenarioError(path, lineno, "'expect:' stands alone on its line")
                in_expect = True
                continue
            if key not in HEADER_KEYS:
                raise ScenarioError(path, lineno, f"unknown key '{key}' "
                                                  f"(known: {', '.join(HEADER_KEYS)}, expect)")
            if key in seen_keys:
                raise ScenarioError(path, lineno, f"key '{key}' already given on line "
                                                  f"{seen_keys[key]}")
            seen_keys[key] = lineno
            try:
                _header(key, value.strip(), head)
            except ValueError as exc:
                raise ScenarioError(path, lineno, f"key '{key}': {exc}") from None
            continue
        parser = _LineParser(path, lineno, len(expects) + 1, expects, labels)
        exp = parser.parse(line)
        if exp.label:
            labels[exp.label] = (lineno, len(expects))
        expects.append(exp)
    if "responder" not in head:
        raise ScenarioError(path, None, "missing key 'responder' (e.g. 'responder: --app hello')")
    if not in_expect:
        raise ScenarioError(path, None, "missing 'expect:' section")
    if not expects:
        raise ScenarioError(path, None, "'expect:' section has no lines")
    _check_header(path, head, seen_keys)
    measures = []
    if "measure" in head:
        try:
            measures = _measures(head["measure"], labels)
        except ValueError as exc:
            raise ScenarioError(path, seen_keys["measure"], f"key 'measure': {exc}") from None
    return Scenario(
        path=path, name=Path(path).stem, lesson=head.get("lesson", ""),
        responder=head["responder"], responder_args=head["responder_args"],
        client=head.get("client", "nc"), client_args=head.get("client_args", ()),
        stdin=head.get("stdin", b""), conditions=head.get("conditions", ""),
        timeout=head.get("timeout"), trailing=head.get("trailing", "forbid"),
        expects=tuple(expects), script=head.get("script", ()), hold=head.get("hold"),
        linger=head.get("linger", 0.0), counters=head.get("counters", ()),
        states=head.get("states", ()), measures=tuple(measures),
        condition_list=head.get("condition_list", ()),
        backends=head.get("backends", KNOWN_BACKENDS))


def _check_header(path: str, head: dict, seen: dict) -> None:
    """Checks that need several keys: the script's steps against the client kind."""
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
    isn_fixed = "--isn" in head.get("responder_args", ()) or \
        "--classic" in head.get("responder_args", ())
    for c in head.get("condition_list", ()):
        if c.field in ("ack", "seq") and not isn_fixed:
            raise ScenarioError(path, seen["conditions"], f"key 'conditions': {c.text!r} names "
                                "a sequence number, which needs a fixed ISN "
                                "(responder: ... --isn N)")


def _measures(value: str, labels: dict) -> list:
    out = []
    for part in _split_top(value):
        m = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\s+@([\w-]+)\s+@([\w-]+)\s*", part)
        if not m:
            raise ValueError(f"expected 'NAME @from @to', got {part.strip()!r}")
        for lab in m.group(2, 3):
            if lab not in labels:
                raise ValueError(f"no expect line is labelled @{lab}")
        out.append(Measure(m.group(1), labels[m.group(2)][1], labels[m.group(3)][1],
                           part.strip()))
    return out


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def scenario_path(name_or_path) -> Path:
    """``hello`` -> ``scenarios/hello.scn``; an existing path is returned as is."""
    p = Path(name_or_path)
    if p.suffix == SUFFIX or p.exists():
        return p
    return SCENARIO_DIR / f"{name_or_path}{SUFFIX}"


def load_scenario(name_or_path) -> Scenario:
    """Read and parse a scenario by name (``hello``) or path."""
    path = scenario_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(_display_path(path), None, f"cannot read: {exc.strerror}") from None
    return parse_scenario(text, _display_path(path))


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``scenarios/``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob(f"*{SUFFIX}"))


#: The lessons in the lecture's order (``invoke scenarios``); other scenarios follow by name.
LESSON_ORDER = ("hello", "classic", "classic-close", "classic-echo-bug", "delayed-ack",
                "nagle-delayed-ack", "nagle-nodelay", "nagle-responder",
                "nagle-responder-nodelay", "nagle-linux", "rto-backoff", "tarpit", "close-states",
                "close-states-passive", "close-states-simultaneous", "challenge-ack", "miniweb")
#: Lessons that are tasks, not scenario files.
TASK_LESSONS = (("doctor", "invoke doctor: the lab checked piece by piece (interfaces, offload, "
                           "RST rule, responder, Scapy with vboxnet0 up), each failure explained"),)


def lessons() -> list[tuple[str, str]]:
    """(name, one-line lesson) for every scenario, in the lecture's order, then the tasks."""
    names = list_scenarios()
    order = [n for n in LESSON_ORDER if n in names] + sorted(set(names) - set(LESSON_ORDER))
    out = []
    for n in order:
        try:
            out.append((n, load_scenario(n).lesson))
        except ScenarioError as e:
            out.append((n, f"(broken: {e})"))
    return out + list(TASK_LESSONS)


def format_lessons() -> str:
    rows = lessons()
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"{n:<{width}}  {lesson}" for n, lesson in rows)
