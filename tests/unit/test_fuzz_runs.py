"""The long runs on a real lab (harness.stress.soak, harness.stress.flood) take the lab's lock
before they touch the lab (issue 15 finding 8): while another tcplab command holds a lab, a soak
or a flood on it stops at once with "busy", and leaves the lab alone."""

from __future__ import annotations

import os

import pytest

from harness.util import LabError


@pytest.fixture
def held_lab():
    """A lab name whose lock another tcplab command (this test) holds; nothing of it exists."""
    from harness.lab import get_backend
    from tests.conftest import new_prefix
    if os.geteuid() != 0:
        pytest.skip("the lab lock needs root")
    b = get_backend("netns", new_prefix("lck"))
    with b.locked():
        yield b
    assert not b.exists() and not (b.state_dir.parent / f"{b.prefix}.lock").exists()


def test_a_soak_waits_for_no_one_and_touches_nothing_of_a_busy_lab(held_lab, tmp_path):
    from harness.stress.soak import soak
    with pytest.raises(LabError, match=f"lab '{held_lab.prefix}' is busy"):
        soak(1, held_lab.prefix, runs_dir=tmp_path)
    assert not held_lab.exists() and not any(tmp_path.iterdir())


def test_a_flood_touches_nothing_of_a_busy_lab(held_lab):
    from harness.stress.flood import flood_run
    with pytest.raises(LabError, match=f"lab '{held_lab.prefix}' is busy"):
        flood_run(10, held_lab.prefix, clients=1)
    assert not held_lab.exists()
