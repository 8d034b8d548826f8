"""A pytest plugin for writing your own scenario tests.

Enable it in your ``conftest.py`` (at the root of your tests)::

    pytest_plugins = ["harness.pytest_plugin"]

or on the command line: ``pytest -p harness.pytest_plugin``.  Then::

    def test_my_lesson(run_scenario):
        res = run_scenario("scenarios/my-lesson.scn")        # or a shipped name: "hello"
        assert res.ok, res.summary

    def test_my_check_catches_the_bug(run_scenario):
        res = run_scenario("delayed-ack", fault="no-delayed-ack")
        assert not res.ok and "delayed-ack.scn:" in res.reason

Fixtures:

* ``lab`` (session): a provisioned lab -- backend ``$TCPLAB_BACKEND`` (default netns), prefix
  ``$TCPLAB_PREFIX`` (default ``scn`` + random hex).  A lab the fixture made is removed at the
  end of the session; an existing one named by ``$TCPLAB_PREFIX`` is used and left alone.
  Needs root (the test is skipped otherwise).
* ``run_scenario(name_or_path, **kw)``: :func:`harness.run.demo.run_demo` on that lab, its run
  folder under the test's ``tmp_path`` unless ``runs_dir=`` says otherwise; keyword arguments
  as ``run_demo``'s (``fault=``, ``responder=``, ``client_timeout=``).  It returns the
  ``DemoResult``: ``ok``, ``reason``, ``summary``, ``run_dir`` (pcapng, transcript.txt,
  ladder.svg, result.json), ``measurements``, ``counters``, ``verdict``.
"""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def lab():
    """A provisioned lab for the whole session (see the module docstring)."""
    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    if os.geteuid() != 0:
        pytest.skip("scenario tests need root (network namespaces, raw sockets)")
    prefix = os.environ.get("TCPLAB_PREFIX") or f"scn{uuid.uuid4().hex[:7]}"
    backend = get_backend(os.environ.get("TCPLAB_BACKEND", "netns"), prefix)
    existed = backend.exists()
    try:
        bring_up(backend)
        yield backend
    finally:
        if not existed:
            backend.down()


@pytest.fixture
def run_scenario(lab, tmp_path):
    """``run_scenario(name_or_path, **run_demo_kwargs) -> DemoResult`` on the session's lab."""
    from harness.run.demo import run_demo

    def run(name, **kw):
        kw.setdefault("runs_dir", tmp_path / "runs")
        return run_demo(lab, name, **kw)
    return run
