"""The shipped lessons: where scenario files live, how one is read (safely), and the list.

A scenario is read only if it is a regular file of at most ``MAX_FILE_BYTES`` of UTF-8 text:
``--scenario /dev/zero`` or a FIFO is refused at once, never read forever.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.judge.model import MAX_FILE_BYTES, Scenario, ScenarioError
from harness.judge.parser import parse_scenario
from harness.util import PROJECT_ROOT

SCENARIO_DIR = PROJECT_ROOT / "scenarios"
SUFFIX = ".scn"

#: The lessons in the lecture's order (``invoke scenarios``, ``invoke lessons``); other
#: scenarios follow by name.
LESSON_ORDER = ("hello", "classic", "classic-close", "classic-echo-bug", "delayed-ack",
                "nagle-delayed-ack", "nagle-nodelay", "nagle-responder",
                "nagle-responder-nodelay", "nagle-linux", "rto-backoff", "tarpit", "close-states",
                "close-states-passive", "close-states-simultaneous", "challenge-ack", "miniweb",
                "two-clients")
#: Lessons that are tasks, not scenario files.
TASK_LESSONS = (("doctor", "invoke doctor: the lab checked piece by piece (interfaces, offload, "
                           "RST rule, responder, Scapy with vboxnet0 up), each failure explained"),)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
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


def read_scenario_text(path: Path) -> str:
    """The text of the scenario file at ``path``: a regular file, at most MAX_FILE_BYTES,
    UTF-8.  Anything else is a ScenarioError naming the file."""
    shown = display_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ScenarioError(shown, None, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ScenarioError(shown, None, "not a regular file (a scenario is a text file, "
                                             "e.g. scenarios/hello.scn)")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise ScenarioError(shown, None, f"larger than {MAX_FILE_BYTES // 1024} KB: a scenario "
                                         f"is a short text file")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(shown, None, f"not UTF-8 text (byte {exc.start})") from None


def load_scenario(name_or_path) -> Scenario:
    """Read and parse a scenario by name (``hello``) or path."""
    path = scenario_path(name_or_path)
    return parse_scenario(read_scenario_text(path), display_path(path))


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``scenarios/``, in the lecture's order."""
    names = sorted(p.stem for p in SCENARIO_DIR.glob(f"*{SUFFIX}"))
    return [n for n in LESSON_ORDER if n in names] + [n for n in names if n not in LESSON_ORDER]


def lessons() -> list[tuple[str, str]]:
    """(name, one-line lesson) for every scenario, in the lecture's order, then the tasks."""
    out = []
    for n in list_scenarios():
        try:
            out.append((n, load_scenario(n).lesson))
        except ScenarioError as e:
            out.append((n, f"(broken: {e})"))
    return out + list(TASK_LESSONS)


def format_lessons() -> str:
    rows = lessons()
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"{n:<{width}}  {lesson}" for n, lesson in rows)
