"""harness.util's command helpers: the one streaming loop (its lines, log, watchdog, errors)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.util import LabError, cmdline, stream, wait_until


def test_lines_go_to_show_and_log_in_order(tmp_path):
    seen = []
    with open(tmp_path / "x.log", "w") as log:
        res = stream([sys.executable, "-c", "print('a'); import sys; "
                      "print('b', file=sys.stderr, flush=True); print('c')"],
                     log=log, show=seen.append)
    assert res.returncode == 0 and sorted(seen) == ["a", "b", "c"]
    text = (tmp_path / "x.log").read_text()
    assert text.startswith("$ ") and sys.executable in text.splitlines()[0]
    assert sorted(text.splitlines()[1:]) == ["a", "b", "c"]
    assert sorted(res.stdout.splitlines()) == ["a", "b", "c"]


def test_separate_stdout_reads_stderr_lines(tmp_path):
    seen = []
    with open(tmp_path / "out", "w+") as out:
        res = stream([sys.executable, "-c", "import sys; print('to-stdout'); "
                      "print('to-stderr', file=sys.stderr)"], show=seen.append, stdout=out)
        out.seek(0)
        assert out.read() == "to-stdout\n"
    assert seen == ["to-stderr"] and res.stdout == "to-stderr\n"


def test_failure_names_the_command_the_last_lines_and_the_log(tmp_path):
    with open(tmp_path / "f.log", "w") as log, pytest.raises(LabError) as err:
        stream([sys.executable, "-c", "print('one'); print('two'); raise SystemExit(3)"],
               log=log, what="the thing")
    msg = str(err.value)
    assert "the thing failed (exit 3)" in msg and "two" in msg and "f.log" in msg
    res = stream([sys.executable, "-c", "raise SystemExit(3)"], check=False)
    assert res.returncode == 3


def test_a_silent_command_is_killed_at_its_timeout():
    t0 = time.monotonic()
    with pytest.raises(LabError, match="did not finish within 0.5 s"):
        stream(["sleep", "30"], timeout=0.5, what="sleep")
    assert time.monotonic() - t0 < 10


def test_a_missing_program_is_one_clear_error():
    with pytest.raises(LabError, match="is not installed"):
        stream(["tcplab-no-such-program"])


def test_cmdline_of_a_process_and_of_none():
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "tcplab-marker"]
    p = subprocess.Popen(argv)
    try:
        # (just after the fork, before exec, the child's command line is not yet its own)
        assert wait_until(lambda: cmdline(p.pid) == " ".join(argv) + " ", timeout=5)
    finally:
        p.kill()
        p.wait()
    assert cmdline(p.pid) == ""
