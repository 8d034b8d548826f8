"""Shared pytest fixtures.

``lab`` gives an end-to-end test a real, provisioned netns lab with a unique prefix and removes
it afterwards, also when the test fails.  ``root_ns_snapshot`` records what the root network
namespace looks like so a test can assert a lab left it untouched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def new_prefix(tag: str = "e2e") -> str:
    """A unique, valid lab prefix (<= 10 chars) for one test."""
    return f"{tag}{uuid.uuid4().hex[:10 - len(tag)]}"


def require_lab_machine():
    if os.geteuid() != 0:
        pytest.skip("end-to-end lab tests need root")


def require_vm_machine(what: str = "the qemu backend needs root (namespaces, tap)"):
    """Skip unless root and the qemu backend's tools are here (packages/apt-vm.txt)."""
    import shutil
    if os.geteuid() != 0:
        pytest.skip(what)
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap")
               if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages/apt-vm.txt; "
                    f"`sudo ./bootstrap test` installs them, unless TCPLAB_NO_VM=1)")


@contextlib.contextmanager
def provisioned_lab(tag: str = "e2e", backend: str = "netns"):
    """A provisioned lab for a block (e.g. a module-scoped fixture), removed even on failure."""
    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    require_lab_machine()
    b = get_backend(backend, new_prefix(tag))
    try:
        bring_up(b)
        yield b
    finally:
        b.down()


@pytest.fixture
def lab_factory():
    """Make labs on demand (``lab_factory(backend='netns')``); all are removed at teardown."""
    from harness.lab import get_backend
    require_lab_machine()
    made = []

    def make(backend: str = "netns", prefix: str | None = None, provision: bool = True):
        from harness.lab.provision import bring_up
        b = get_backend(backend, prefix or new_prefix())
        made.append(b)
        if provision:
            bring_up(b)
        else:
            b.up()
        return b

    yield make
    for b in made:
        b.down()


@pytest.fixture
def lab(lab_factory):
    """A provisioned netns lab, removed after the test."""
    return lab_factory()


def root_ns_state() -> dict:
    """The root namespace's network configuration, as text, for before/after comparisons."""
    def out(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    return {"addr": out("ip", "-o", "addr"), "route": out("ip", "route", "show", "table", "all"),
            "link": "\n".join(l.split("link/")[0] for l in out("ip", "-o", "link").splitlines()),
            "iptables": "\n".join(l for l in out("iptables-save").splitlines()
                                  if not l.startswith("#")),
            "nft": out("nft", "list", "ruleset") if subprocess.run(
                ["which", "nft"], capture_output=True).returncode == 0 else ""}
