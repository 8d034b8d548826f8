"""The real-VM backends' wiring, without a VM: names, SSH endpoints, host-side commands,
provider choice, the guest's network config and the box's files."""

from __future__ import annotations

import pytest

from harness.lab import BACKENDS, get_backend
from harness.util import LabError


@pytest.fixture(autouse=True)
def _state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(tmp_path / "tcplab-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_registered():
    assert {"netns", "qemu", "vagrant"} <= set(BACKENDS)
    with pytest.raises(LabError, match="unknown backend"):
        get_backend("hyperv", "x1")


def test_qemu_host_side_is_a_namespace_with_a_proxied_ssh():
    b = get_backend("qemu", "q9")
    assert b.name == "qemu" and b.host_ns == "q9-host"
    assert b.host_exec_prefix() == ["ip", "netns", "exec", "q9-host"]
    ep = b.ssh_endpoint()
    assert (ep.host, ep.port, ep.user) == ("192.168.56.100", 22, "root")
    assert ep.proxy_command == "ip netns exec q9-host nc %h %p"
    assert b.responder_dir() == "/opt/tcplab"
    assert b.inventory_vars() == {"tcplab_vm_manage_packages": False}
    assert b.capture_interface == "vboxnet0"


def test_qemu_guest_network_is_static_without_gateway():
    from harness.lab.qemu import GUEST_MAC, _guest_network
    cfg = _guest_network("192.168.56.100", 24)
    assert f"MACAddress={GUEST_MAC}" in cfg and "Address=192.168.56.100/24" in cfg
    assert "Gateway" not in cfg and "DHCP" not in cfg


def test_vagrant_libvirt_runs_in_the_lab_namespace():
    b = get_backend("vagrant", "vg9", provider="libvirt")
    assert b.host_exec_prefix() == ["ip", "netns", "exec", "vg9-host"]
    assert b.ssh_endpoint().proxy_command == "ip netns exec vg9-host nc %h %p"
    argv = b._wrap(["virsh", "list"])
    assert argv[:4] == ["ip", "netns", "exec", "vg9-host"] and argv[-2:] == ["virsh", "list"]
    script = argv[argv.index("-c") + 1]
    for target in ("/run/libvirt", "/var/lib/libvirt", "/etc/libvirt"):
        assert f"{target}" in script
    assert str(b.state_dir / "libvirt" / "run") in script


def test_vagrant_virtualbox_runs_on_this_host():
    b = get_backend("vagrant", "vg8", provider="virtualbox")
    assert b.host_exec_prefix() == []
    assert b.ssh_endpoint().proxy_command is None
    assert b._wrap(["vagrant", "status"]) == ["vagrant", "status"]
    env = b._vagrant_env()
    assert env["VAGRANT_DOTFILE_PATH"] == str(b.state_dir / "vagrant")
    assert "TCPLAB_BOX" not in env or env["TCPLAB_BOX"] == "debian/bookworm64"


def test_vagrant_provider_is_checked_and_remembered():
    with pytest.raises(LabError, match="provider"):
        get_backend("vagrant", "vg7", provider="hyperv")
    b = get_backend("vagrant", "vg7", provider="libvirt")
    b.state_dir.mkdir(parents=True)
    b.write_meta(provider="libvirt", capture_interface="virbr7")
    again = get_backend("vagrant", "vg7")
    assert again.provider == "libvirt" and again.capture_interface == "virbr7"


def test_box_boots_the_kernel_shipped_inside_it():
    from harness.lab.vagrant import BOX_VAGRANTFILE
    assert 'lv.kernel = File.join(dir, "vmlinuz")' in BOX_VAGRANTFILE
    assert "root=/dev/vda" in BOX_VAGRANTFILE and "net.ifnames=0" in BOX_VAGRANTFILE
