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

from harness.dissect import ACK, ANALYSIS_FLAGS, CWR, ECE, FIN, PSH, RST, SYN, URG

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
SUFFIX = ".scn"

# Clients the harness knows how to drive.  Later: "python" (a socket script), "scapy".
CLIENTS = ("nc",)
DIRECTIONS = {"c>s": "client→server", "s>c": "server→client"}
FLAG_CHARS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "U": URG, "E": ECE, "W": CWR, ".": ACK}
HEADER_KEYS = ("lesson", "responder", "client", "stdin", "conditions", "timeout", "trailing")
FIELDS = ("seq", "rawseq", "ack", "win", "options", "length", "payload", "analysis", "after")
RESPONDER_APPS = ("hello", "http", "tarpit", "echo")


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
    peer sent earlier."""

    mode: str
    items: tuple = ()

    def __str__(self):
        if self.mode == "echo":
            return "echo"
        inner = ",".join(str(i) for i in self.items)
        return f"[{inner}]" if self.mode == "exact" else f"{{{inner}}}"


@dataclass(frozen=True)
class Timing:
    """``after REF within LO-HI``: this packet comes LO..HI seconds after REF's packet."""

    ref: int          # 0-based index of the referenced expect line
    ref_text: str
    lo: float
    hi: float

    def __str__(self):
        return f"after {self.ref_text} within {self.lo:g}-{self.hi:g}s"


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
    t = text.strip()
    if not t:
        raise ValueError("empty flags []")
    bits = 0
    for ch in t:
        if ch not in FLAG_CHARS:
            raise ValueError(f"unknown flag {ch!r} in [{t}] (use F S R P U E W and .)")
        if bits & FLAG_CHARS[ch]:
            raise ValueError(f"flag {ch!r} twice in [{t}]")
        bits |= FLAG_CHARS[ch]
    return bits


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
    if len(t) >= 2 and (t[0], t[-1]) in (("[", "]"), ("{", "}")):
        inner = t[1:-1].strip()
        items = tuple(_parse_option(p) for p in _split_top(inner)) if inner else ()
        return OptionsSpec("exact" if t[0] == "[" else "contains", items)
    raise ValueError(f"expected [list], {{set}}, echo or *, got {t!r}")


# ---------------------------------------------------------------- the file

_HEAD = re.compile(r"(?:@(?P<label>[A-Za-z_][\w-]*)\s+)?(?P<dir>\S+)\s+\[(?P<flags>[^\]]*)\]"
                   r"\s*(?P<rest>.*)$")


def _responder_args(value: str) -> tuple:
    """Validate the responder's arguments against its CLI contract (design.md)."""
    try:
        args = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r}: {exc}") from None
    i, seen = 0, set()
    while i < len(args):
        a = args[i]
        if a in ("--app", "--isn", "--mark"):
            if i + 1 >= len(args):
                raise ValueError(f"{a} needs a value")
            v = args[i + 1]
            if a == "--app" and v not in RESPONDER_APPS:
                raise ValueError(f"--app must be one of {', '.join(RESPONDER_APPS)}, got {v!r}")
            if a != "--app":
                try:
                    _int(v)
                except ValueError:
                    raise ValueError(f"{a} needs a number, got {v!r}") from None
            i += 2
        elif a == "--classic":
            i += 1
        elif a == "--listen":
            raise ValueError("--listen is set by the harness, not by the scenario")
        else:
            raise ValueError(f"unknown responder argument {a!r} "
                             "(known: --app, --classic, --isn, --mark)")
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
        head["client"], head["client_args"] = words[0], tuple(words[1:])
    elif key == "stdin":
        head["stdin"] = _quoted(value)
    elif key == "conditions":
        head["conditions"] = value
    elif key == "timeout":
        head["timeout"] = _duration(value)
    elif key == "trailing":
        if value not in ("forbid", "allow"):
            raise ValueError(f"expected forbid or allow, got {value!r}")
        head["trailing"] = value


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
            flags = parse_flags(m["flags"])
        except ValueError as exc:
            self.fail("flags", str(exc))
        label = m["label"]
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
                 direction=m["dir"], flags=flags, flags_text=m["flags"].strip())
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
        if e["flags"] & SYN and e.get("seq") not in (None, 0):
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
            if re.match(r"\s*(@\S+\s+)?(c>s|s>c)\s", line):
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
    return Scenario(
        path=path, name=Path(path).stem, lesson=head.get("lesson", ""),
        responder=head["responder"], responder_args=head["responder_args"],
        client=head.get("client", "nc"), client_args=head.get("client_args", ()),
        stdin=head.get("stdin", b""), conditions=head.get("conditions", ""),
        timeout=head.get("timeout"), trailing=head.get("trailing", "forbid"),
        expects=tuple(expects))


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
