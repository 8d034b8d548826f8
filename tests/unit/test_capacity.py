"""harness.lab.capacity: a request the machine cannot hold is refused before anything is made,
naming the resource, the figures and how many labs fit (resources() is this machine's, read
for real; the "machine" is replaced only to reach each limit)."""

from __future__ import annotations

import pytest

from harness.lab import capacity
from harness.util import LabError


class _Lab:
    def __init__(self, name="netns"):
        self.name = name


def test_resources_are_read_from_this_machine():
    have = capacity.resources()
    assert have["memory_mb"] > 0 and have["tasks"] > 0 and have["nofile"] > 0
    assert have["netns"] > 0 and have["memory_from"] in ("MemAvailable", "cgroup memory.max")


def test_what_many_labs_need_grows_with_them():
    one, forty = capacity.need(1), capacity.need(40)
    assert forty["memory_mb"] - one["memory_mb"] == 39 * (capacity.MB_PER_LAB +
                                                           capacity.MB_PER_LAB_MAKING)
    assert forty["netns"] == 80 and forty["tasks"] == 40 * capacity.TASKS_PER_LAB
    assert capacity.need(0, guests=2)["memory_mb"] >= 2 * capacity.QEMU_MB


def test_a_small_request_passes_and_an_impossible_one_is_refused_with_the_figures():
    capacity.check([_Lab()] * 2)                                # this machine holds two
    fit = capacity.max_labs()
    assert fit >= 2
    with pytest.raises(LabError) as err:
        capacity.check([_Lab()] * (fit + 1))
    text = str(err.value)
    assert f"{fit + 1} more lab(s) need" in text and f"ask for at most {fit} lab(s)" in text
    assert "\n" not in text


@pytest.mark.parametrize("short,what", [("memory_mb", "MB of memory"),
                                        ("tasks", "processes"),
                                        ("nofile", "open files in one process"),
                                        ("netns", "network namespaces")])
def test_each_limit_is_named_when_it_is_the_one_that_runs_out(monkeypatch, short, what):
    plenty = {"memory_mb": 1e9, "tasks": 10**9, "nofile": 10**9, "netns": 10**9,
              "memory_from": "MemAvailable"}
    monkeypatch.setattr(capacity, "resources", lambda: dict(plenty, **{short: 100}))
    with pytest.raises(LabError, match=f"need ~[0-9,]+ {what}"):
        capacity.check([_Lab()] * 50)


def test_other_backends_count_their_guests_and_unknown_ones_nothing(monkeypatch):
    monkeypatch.setattr(capacity, "resources", lambda: {
        "memory_mb": 2000.0, "tasks": 10**6, "nofile": 10**6, "netns": 10**6,
        "memory_from": "MemAvailable"})
    capacity.check([_Lab("vagrant-virtualbox-elsewhere")] * 1000)      # not on this machine
    with pytest.raises(LabError, match="MB of memory"):
        capacity.check([_Lab("qemu")] * 2)
