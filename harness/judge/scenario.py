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

This module is the one name to import; the work is done in four modules:

* :mod:`harness.judge.model` -- the parsed scenario as frozen values, the vocabulary, the bounds,
  :class:`ScenarioError`;
* :mod:`harness.judge.lexer` -- strings, numbers, durations, flags and options;
* :mod:`harness.judge.parser` -- header keys, expect lines, the whole file;
* :mod:`harness.judge.catalogue` -- reading a file safely, the shipped lessons and their order.

It only parses and validates; :mod:`harness.judge.match` judges a capture against the result.
Every error is a :class:`ScenarioError` naming file, line and field.
"""

from __future__ import annotations

from harness.judge import model
from harness.judge.catalogue import (LESSON_ORDER, SCENARIO_DIR, SUFFIX, TASK_LESSONS,
                                     display_path, format_lessons, lessons, list_scenarios,
                                     load_scenario, read_scenario_text, scenario_path)
from harness.judge.lexer import (c_unescape, parse_flag_spec, parse_flags, parse_option,
                                 parse_options_spec)
from harness.judge.model import *  # noqa: F403  (the model and the format's vocabulary)
from harness.judge.parser import (NOT_FROM_A_SCENARIO, parse_conditions, parse_scenario,
                                  parse_script, parse_states, responder_args)

__all__ = [*model.__all__, "LESSON_ORDER", "SCENARIO_DIR", "SUFFIX", "TASK_LESSONS",
           "display_path", "format_lessons", "lessons", "list_scenarios", "load_scenario",
           "read_scenario_text", "scenario_path", "c_unescape", "parse_flag_spec", "parse_flags", "parse_option",
           "parse_options_spec", "NOT_FROM_A_SCENARIO", "parse_conditions", "parse_scenario",
           "parse_script", "parse_states", "responder_args"]
