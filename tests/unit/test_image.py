"""The guest image's recipe and cache naming (no build here: tests/e2e/test_qemu.py builds)."""

from __future__ import annotations

from pathlib import PurePath

import pytest

from harness.lab import image
from responder.contract import RUNTIMES


def test_recipe_hash_names_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = image.image_dir()
    assert d.parent == tmp_path / "tcplab" / "images"
    assert d.name == image.recipe_hash() and len(d.name) == 16
    assert not image.image_ready(d)


def test_recipe_changes_change_the_hash(monkeypatch):
    base = image.recipe_hash()
    monkeypatch.setattr(image, "PACKAGES", image.PACKAGES + ("tcpdump",))
    assert image.recipe_hash() != base
    monkeypatch.undo()
    files = dict(image.GUEST_FILES)
    files["/etc/hostname"] = (0o644, "other\n")
    monkeypatch.setattr(image, "GUEST_FILES", files)
    assert image.recipe_hash() != base
    monkeypatch.undo()
    assert image.recipe_hash() == base


def test_recipe_has_what_the_lab_needs():
    r = image.recipe()
    assert r["suite"] == "bookworm" and r["variant"] == "minbase"
    for p in ("linux-image-amd64", "openssh-server", "python3", "iptables", "iproute2", "sudo",
              "systemd-sysv"):
        assert p in r["packages"]
    assert "tcplab-fwcfg.service" in r["chroot"]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_the_lab_image_carries_every_runtimes_interpreter(runtime):
    """A qemu guest has no package mirror: each --runtime's interpreter (Debian's package of
    the same name) is baked into the lab image, which the provisioning never adds to."""
    assert PurePath(RUNTIMES[runtime]).name in image.recipe()["packages"]


def test_mirror_from_env_wins(monkeypatch):
    monkeypatch.setenv("TCPLAB_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert image.debian_mirror() == "http://mirror.example/debian"


def test_mirror_is_a_url(monkeypatch):
    monkeypatch.delenv("TCPLAB_DEBIAN_MIRROR", raising=False)
    m = image.debian_mirror()
    assert m.startswith(("http://", "https://")) and not m.rstrip("/").endswith("-security")
