"""End-to-end: lessons pass with the responder under PyPy too (issue 13: the responder is
standard-library Python that runs on CPython and on Debian's ``pypy3``).

The whole lesson suite runs on either runtime with an environment switch::

    sudo TCPLAB_RUNTIME=pypy .venv/bin/python -m pytest tests/e2e/test_scenarios.py

(the lab fixture's provisioning then checks ``pypy3`` in the VM, and every run's launcher
starts the responder with it).  This module runs a few lessons under PyPy in the default
suite, whatever ``$TCPLAB_RUNTIME`` says, naming the interpreter explicitly, and checks that
the responder really ran under it.
"""

from __future__ import annotations

import json
import os

import pytest

from harness.judge.scenario import load_scenario
from harness.pytest_plugin import lab, run_scenario  # noqa: F401  (the plugin's fixtures)
from harness.run.responder import TcplabResponder
from responder.contract import RUNTIMES

pytestmark = pytest.mark.e2e

PYPY = RUNTIMES["pypy"]
# The hello exchange, an HTTP page (miniweb's precomputed packets), the close states with
# their timers, and RFC 5961's challenge ACK: the state machine's main paths.
LESSONS = ("hello", "miniweb", "close-states", "challenge-ack")


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_passes_with_the_responder_under_pypy(run_scenario, name):  # noqa: F811
    if not os.access(PYPY, os.X_OK):
        pytest.skip(f"{PYPY} is not installed (apt-get install -y pypy3; ./bootstrap does)")
    args = list(load_scenario(name).responder_args)
    res = run_scenario(name, launcher=TcplabResponder(args, python=PYPY))
    assert res.ok, res.summary
    result = json.loads((res.run_dir / "result.json").read_text())
    assert result["run"]["responder_argv"][0] == PYPY
    assert res.counters.get("segments_in", 0) > 0 and res.counters["exit_status"] == 0
