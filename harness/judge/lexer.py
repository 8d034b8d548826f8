"""The scenario format's small pieces: strings, numbers, durations, flags, options, splitting.

Every function takes one piece of text and returns a value or raises ``ValueError`` with a
message that says what was expected; :mod:`harness.judge.parser` adds the file, line and
field.  Numbers and durations have strict patterns and bounds (:mod:`harness.judge.model`):
no ``nan``, no ``inf``, no 400 nines, nothing that takes longer than the text is long.
"""

from __future__ import annotations

import re

from harness.judge.model import (ANY, FLAG_CHARS, MAX_NUMBER, MAX_PAYLOAD, MAX_SECONDS,
                                 OPTIONAL_FLAG_CHARS, OptSpec, OptionsSpec, Val)

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}
_HEX2 = re.compile(r"[0-9a-fA-F]{1,2}")
_OCT3 = re.compile(r"[0-7]{1,3}")
#: A number as the format writes it: decimal or 0x hex, short enough to mean something.
_INT = re.compile(r"0x[0-9a-fA-F]{1,8}|\d{1,10}")
#: A duration: 1.5s, 200ms, .5s -- at most six digits either side of the point.
_DURATION = re.compile(r"(\d{1,6}(?:\.\d{0,6})?|\.\d{1,6})\s*(ms|s)")
#: A relative bound: 1.6x.
_FACTOR = re.compile(r"(\d{1,3}(?:\.\d{1,3})?)x")


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
            m = _HEX2.match(s, i + 2)
            if not m:
                raise ValueError("\\x needs hex digits")
            out.append(int(m.group(), 16))
            i = m.end()
        elif nxt in "01234567":
            m = _OCT3.match(s, i + 1)
            out.append(int(m.group(), 8) & 0xFF)
            i = m.end()
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return bytes(out)


def quoted(text: str, limit: int = MAX_PAYLOAD) -> bytes:
    """A ``"C string"`` as bytes, at most ``limit`` of them."""
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f'expected a "quoted string", got {_short(text)!r}')
    data = c_unescape(text[1:-1])
    if len(data) > limit:
        raise ValueError(f"{len(data)} bytes is more than the {limit} a scenario may send "
                         f"or expect in one string")
    return data


def integer(text: str, limit: int = MAX_NUMBER) -> int:
    """N or 0xHEX, 0 <= N <= ``limit``."""
    text = text.strip()
    if not _INT.fullmatch(text):
        raise ValueError
    n = int(text, 0)
    if n > limit:
        raise ValueError(f"{n} is more than {limit}")
    return n


def duration(text: str, limit: float = MAX_SECONDS) -> float:
    """``1.5s`` or ``200ms`` in seconds, at most ``limit``."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"expected a duration like 1.5s or 200ms, got {_short(text.strip())!r}")
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if seconds > limit:
        raise ValueError(f"{text.strip()} is longer than the {limit:g} s a scenario may ask for")
    return seconds


def factor(text: str) -> float:
    """``1.6x`` -> 1.6 (a relative timing bound)."""
    m = _FACTOR.fullmatch(text.strip())
    if not m:
        raise ValueError(f"expected a factor like 1.6x, got {_short(text.strip())!r}")
    return float(m.group(1))


def value(text: str, *, allow=("exact", "any")) -> Val:
    """N, ``*``, lo-hi, ``echo``, ``latest`` — as far as ``allow`` permits."""
    t = text.strip()
    if t == "*" and "any" in allow:
        return ANY
    if t in ("echo", "latest") and t in allow:
        return Val(t)
    lo, dash, hi = t.partition("-")
    if dash and "range" in allow:
        try:
            a, b = integer(lo), integer(hi)
        except ValueError:
            pass
        else:
            if a > b:
                raise ValueError(f"empty range {t!r}")
            return Val("range", a, b)
    try:
        return Val("exact", integer(t))
    except ValueError:
        words = {"exact": "N", "any": "*", "range": "LO-HI", "echo": "echo", "latest": "latest"}
        raise ValueError(f"expected {' or '.join(words[a] for a in allow)}, "
                         f"got {_short(t)!r}") from None


def split_top(text: str, sep: str = ",") -> list[str]:
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


def strip_comment(line: str) -> str:
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
        raise ValueError(f"optional flags ('?') are not allowed here: [{_short(text.strip())}]")
    return bits


def parse_flag_spec(text: str) -> tuple[int, int]:
    """An expect line's flags, with optional ones: ``P?.`` -> (ACK, PSH): the bits that must be
    set, and the bits that may be set or not (a letter of OPTIONAL_FLAG_CHARS followed by
    ``?``); every other bit must be clear."""
    t = text.strip()
    if not t:
        raise ValueError("empty flags []")
    bits = maybe = 0
    for i, ch in enumerate(t):
        if ch == "?":
            prev = t[i - 1] if i else ""
            if not prev or prev not in OPTIONAL_FLAG_CHARS:
                raise ValueError(f"'?' must follow one of {' '.join(OPTIONAL_FLAG_CHARS)} in "
                                 f"[{_short(t)}] (e.g. [P?.]: PSH may or may not be set)")
            bits &= ~FLAG_CHARS[prev]
            maybe |= FLAG_CHARS[prev]
            continue
        if ch not in FLAG_CHARS:
            raise ValueError(f"unknown flag {ch!r} in [{_short(t)}] (use F S R P U E W and .)")
        if (bits | maybe) & FLAG_CHARS[ch]:
            raise ValueError(f"flag {ch!r} twice in [{t}]")
        bits |= FLAG_CHARS[ch]
    if not bits:
        raise ValueError(f"[{t}] has no flag that is always set (e.g. [P?.], not [P?])")
    return bits, maybe


_TS = re.compile(r"TS\s+val\s+(\S+)\s+ecr\s+(\S+)")
_SACK_BLOCK = re.compile(r"\{(\d{1,10}):(\d{1,10})\}")


def parse_option(text: str) -> OptSpec:
    """One option inside ``[...]``/``{...}``: mss, wscale, sackOK, TS, nop, eol, sack."""
    t = text.strip()
    words = t.split()
    if not words:
        raise ValueError("empty option")
    name = words[0]
    if name in ("nop", "eol", "sackOK") and len(words) == 1:
        return OptSpec(name)
    if name in ("mss", "wscale") and len(words) == 2:
        return OptSpec(name, value(words[1], allow=("exact", "any", "range")))
    if name == "TS":
        m = _TS.fullmatch(t)
        if not m:
            raise ValueError(f"expected 'TS val X ecr Y', got {_short(t)!r}")
        allow = ("exact", "any", "range", "echo", "latest")
        return OptSpec("TS", (value(m.group(1), allow=allow), value(m.group(2), allow=allow)))
    if name == "sack":
        rest = t[4:].strip()
        if rest == "*":
            return OptSpec("sack", ANY)
        blocks = _SACK_BLOCK.findall(rest)
        # (tcpdump prints a block count first, ``sack 1 {1:2}``: a number may stand there)
        if not blocks or not all(w.isdigit() for w in _SACK_BLOCK.sub(" ", rest).split()):
            raise ValueError(f"expected 'sack *' or 'sack {{A:B}}...', got {_short(t)!r}")
        return OptSpec("sack", tuple((int(a), int(b)) for a, b in blocks))
    raise ValueError(f"unknown option {_short(t)!r} (known: mss, wscale, sackOK, TS, nop, eol, "
                     "sack)")


def parse_options_spec(text: str) -> OptionsSpec | None:
    """``[...]`` exact, ``{...}`` contains, ``echo``, ``valid``, ``*`` (= not checked, returns
    None)."""
    t = text.strip()
    if t == "*":
        return None
    if t in ("echo", "valid"):
        return OptionsSpec(t)
    if len(t) >= 2 and (t[0], t[-1]) in (("[", "]"), ("{", "}")):
        inner = t[1:-1].strip()
        items = tuple(parse_option(p) for p in split_top(inner)) if inner else ()
        return OptionsSpec("exact" if t[0] == "[" else "contains", items)
    raise ValueError(f"expected [list], {{set}}, echo, valid or *, got {_short(t)!r}")


def _short(text: str, n: int = 60) -> str:
    """``text`` for a message: a 64 KB value is not repeated back whole."""
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"
