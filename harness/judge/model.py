"""The scenario model: what a parsed ``.scn`` file is, as frozen values.

:mod:`harness.judge.parser` builds these from text, :mod:`harness.judge.match` judges a capture
against them, :mod:`harness.report` prints them.  Also here: the format's vocabulary (keys,
fields, clients and their steps), the bounds a scenario must stay within (a scenario is input
the harness runs as root: nothing in it may make a run unbounded), and :class:`ScenarioError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.judge.dissect import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from harness.lab import BACKENDS as KNOWN_BACKENDS  # a scenario's `backends:` (default: all)

__all__ = ["CLIENTS", "CLIENT_OPTIONS", "CLIENT_OPTION_VALUES", "NC_PATH", "STEPS", "DIRECTIONS",
           "FLAG_CHARS", "OPTIONAL_FLAG_CHARS", "HEADER_KEYS", "COUNTER_OPS", "FIELDS", "KNOWN_BACKENDS",
           "MAX_FILE_BYTES", "MAX_LINE_CHARS", "MAX_SECONDS", "MAX_COUNT", "MAX_PAYLOAD",
           "MAX_NUMBER", "MAX_CLIENTS", "MAX_FIELD_CHARS", "ScenarioError", "c_escape", "Val",
           "ANY", "OptSpec", "OptionsSpec", "Timing", "Step", "CounterCheck", "Measure",
           "Condition", "Expect", "Scenario"]

# Clients the harness knows how to drive (harness/run/clients.py): the real nc, a Python socket
# client with socket options, a Scapy-crafted peer.  Each accepts these options and steps.
CLIENTS = ("nc", "python", "scapy")
#: Options a scenario may give each client.  nc's list is short on purpose: nc runs as root on
#: the host side, and options such as ``-e``/``-c`` (run a program) or ``-X``/``-x`` (a proxy)
#: must never be reachable from a scenario file.
CLIENT_OPTIONS = {"nc": ("-N", "-q", "-w"), "python": ("--nodelay", "--no-quickack", "--mss"),
                  "scapy": ("--delayed-ack",)}
#: Options followed by a number, and the largest number each takes.
CLIENT_OPTION_VALUES = {"--mss": 65535, "-q": 600, "-w": 600}
#: The netcat the harness runs: Debian's OpenBSD netcat, by absolute path (never whatever
#: ``nc`` the PATH finds first).
NC_PATH = "/bin/nc.openbsd"
STEPS = {"nc": ("send", "sleep"),
         "python": ("send", "sleep", "recv", "recv-all", "shutdown", "close"),
         "scapy": ("connect", "send", "sleep", "recv", "wait-fin", "fin", "ack", "rst", "syn",
                   "syn-badsum")}
DIRECTIONS = {"c>s": "client→server", "s>c": "server→client"}
FLAG_CHARS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "U": URG, "E": ECE, "W": CWR, ".": ACK}
#: Flags that an expect line may mark optional with ``?`` (``[P?.]``: PSH may or may not be
#: set).  Not S, R or ``.``: they decide what kind of segment a line is about.
OPTIONAL_FLAG_CHARS = "FPUEW"
HEADER_KEYS = ("lesson", "responder", "client", "clients", "stdin", "script", "conditions",
               "timeout", "hold", "linger", "trailing", "counters", "states", "measure",
               "backends", "cpu")
COUNTER_OPS = ("==", "!=", ">=", "<=", ">", "<")
FIELDS = ("seq", "rawseq", "ack", "win", "options", "length", "payload", "analysis", "after")

# ------------------------------------------------------------------ bounds (issue 15, item 4/5)
MAX_FILE_BYTES = 256 * 1024      #: a scenario file
MAX_LINE_CHARS = 72 * 1024       #: one line (a 16 KB payload written as \xHH escapes fits)
MAX_SECONDS = 600.0              #: timeout, hold, linger, sleep, after ... within, --msl2
MAX_COUNT = 100                  #: drop ... first N, recv N, rst N, syn N
MAX_PAYLOAD = 16 * 1024          #: stdin, one send, all sends of a script, an expected payload
MAX_NUMBER = 0xFFFFFFFF          #: seq, ack, rawseq, win, options' numbers, counters
MAX_CLIENTS = 8                  #: clients: N
MAX_FIELD_CHARS = 200            #: an ``after`` value, a condition, a measure


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``str()`` is ``file:line: message``."""

    def __init__(self, path: str, lineno: int | None, message: str):
        self.path, self.lineno, self.message = path, lineno, message
        where = f"{path}:{lineno}" if lineno else path
        super().__init__(f"{where}: {message}")


def c_escape(data: bytes) -> str:
    """Bytes as a C string body, for messages: ``b"Hi\\n\\0"`` -> ``Hi\\n\\0`` (the inverse of
    :func:`harness.judge.lexer.c_unescape`)."""
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
    sane values, and on a SYN,ACK only the ones the peer's SYN offered)."""

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
    """A lab condition applied in the VM for the run (harness/run/conditions.py).

    ``drop DIR [ack N|seq N] first K``: iptables drops the first K matching packets (c>s in the
    VM's INPUT chain: the capture on the host side still shows them; s>c in its OUTPUT chain:
    they never reach the wire).  ``drop c>s ack-only first K``: the client's first K pure ACKs,
    whatever their numbers.  ``delay``/``loss`` need ``tc netem``."""

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
    clients: int = 1         # copies of the client run at once, each its own connection
    isn: int | None = None   # the responder's fixed ISN (--isn, or --classic's), if any
    cpu_alone: bool = False  # `cpu: alone`: its timing needs the CPU to itself (lessons --labs)

    def runs_on(self, backend: str) -> bool:
        return backend in self.backends

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)
