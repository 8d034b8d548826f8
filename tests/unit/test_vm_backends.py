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


def test_no_backend_inherits_from_another():
    """Backends share code by composition (Backend's parts, net.Namespace, lab/vm.py), never
    by subclassing another backend to borrow its helpers."""
    from harness.lab import Backend, backend_class
    for name in BACKENDS:
        assert backend_class(name).__bases__ == (Backend,), name
    import harness.lab.vagrant as vagrant
    assert "harness.lab.qemu" not in vagrant.__dict__.values()
    src = open(vagrant.__file__).read()
    assert "harness.lab.qemu" not in src and "harness.lab.netns" not in src


def test_vagrant_virtualbox_has_no_namespace_at_all():
    b = get_backend("vagrant", "vg6", provider="virtualbox")
    assert b.host_namespace is None and b.namespaces() == [] and b.host_ns is None
    lv = get_backend("vagrant", "vg5", provider="libvirt")
    assert [ns.name for ns in lv.namespaces()] == ["vg5-host"]


def test_each_backend_names_its_namespaces():
    assert [ns.name for ns in get_backend("netns", "n1").namespaces()] == ["n1-host", "n1-vm"]
    assert [ns.name for ns in get_backend("qemu", "q1").namespaces()] == ["q1-host"]


def test_only_lab_net_runs_ip_and_ethtool():
    """lab/net.py is the one place that builds ip/ethtool command lines (for the lab, the
    doctor and the bench); the others call it."""
    import re
    from tests.conftest import ROOT
    files = sorted((ROOT / "harness" / "lab").glob("*.py")) + [ROOT / "harness" / "doctor.py",
                                                                ROOT / "bench" / "runner.py",
                                                                ROOT / "bench" / "lab.py"]
    argv = re.compile(r"""\[\s*["'](ip|ethtool)["']|["'](ip|ethtool) (-|netns|link|addr)""")
    offenders = [f"{f.name}:{n}" for f in files if f.name != "net.py"
                 for n, line in enumerate(f.read_text().splitlines(), 1)
                 if argv.search(line) and "`" not in line]
    assert not offenders, offenders


@pytest.mark.parametrize("raw", ["/run/tcplab x", "/run/tcplab,x", "/run/tcp lab/tcplab",
                                 "/run/tcplab;x", "/run/tcplab\nx", "/run/tcplab'"])
def test_a_state_root_that_would_split_command_lines_is_refused(monkeypatch, raw):
    """A space in TCPLAB_STATE_ROOT became extra ssh options (UserKnownHostsFile=/run/tcplab
    x...), a comma ended qemu's -drive file= value."""
    from harness.lab.state import state_root
    monkeypatch.setenv("TCPLAB_STATE_ROOT", raw)
    with pytest.raises(LabError, match="may contain only letters"):
        state_root()


@pytest.mark.parametrize("prefix", ["lab\n", "lab\r", " lab", "lab "])
def test_prefix_is_matched_whole(prefix):
    with pytest.raises(LabError, match="invalid lab prefix"):
        get_backend("netns", prefix)


def test_sshd_uses_pam_only_where_root_is_locked(tmp_path, monkeypatch):
    from harness.lab import netns
    shadow = tmp_path / "shadow"
    for line, locked in (("root:!:20228:0:99999:7:::", True), ("root:!*:1::::::", True),
                         ("root:*:20228:0:99999:7:::", False), ("root:$y$j9T$abc:1::::::", False),
                         ("daemon:!:1::::::\nroot:*:1::::::", False)):
        shadow.write_text(line + "\n")
        assert netns.root_locked(shadow) is locked, line
    assert netns.root_locked(tmp_path / "missing") is False
    monkeypatch.setenv(netns.SSHD_PAM_ENV, "yes")
    assert netns.sshd_use_pam() is True
    monkeypatch.setenv(netns.SSHD_PAM_ENV, "no")
    assert netns.sshd_use_pam() is False
    monkeypatch.setenv(netns.SSHD_PAM_ENV, "maybe")
    with pytest.raises(LabError, match="TCPLAB_SSHD_PAM='maybe'"):
        netns.sshd_use_pam()
