"""Remote labs (``--hosts``) without a lab host: the inventory read by Ansible itself, each host's
drive connection, what a failed play says about each host (from real ``ansible-playbook``
output), the run's inventory, the remote backend's command lines, ``onhost exec`` and the
lab-host image recipe.  tests/e2e/test_remote.py runs them against a real lab host."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.lab import get_backend, image
from harness.lab.labhosts import LabHost, host_problem, parse_play, read_inventory
from harness.util import LabError
from tests.conftest import ROOT

HOSTSIDE = ROOT / "harness" / "lab" / "onhost.py"


@pytest.fixture(autouse=True)
def _state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_ROOT", str(tmp_path / "tcplab-state"))


def _host(**vars_) -> LabHost:
    return LabHost("lh1", {"ansible_host": "10.9.8.7", **vars_})


# ----------------------------------------------------------------------------- the image

def test_the_lab_host_image_is_a_variant_and_the_default_recipe_is_unchanged():
    default = image.recipe()
    assert "image_variant" not in default
    assert default["packages"] == list(image.PACKAGES + image.LAB_PACKAGES)
    assert default["chroot"] == image.CHROOT_SCRIPT
    assert default == image.recipe("lab")
    host = image.recipe("labhost")
    for pkg in ("tshark", "tcpdump", "netcat-openbsd", "python3-scapy", *image.PACKAGES):
        assert pkg in host["packages"]
    assert "pypy3" not in host["packages"]    # what the tcplab_labhost role requires, no more
    assert "usermod -p '*' root" in host["chroot"]       # root not locked: sshd without PAM
    assert image.image_dir("labhost") != image.image_dir()
    assert image.recipe_hash(host) != image.recipe_hash()
    with pytest.raises(LabError, match="unknown image variant 'box'"):
        image.recipe("box")


# ----------------------------------------------------------------------------- a lab host

def test_the_drive_connection_takes_the_inventory_variables():
    h = _host(ansible_port=2222, ansible_user="admin", ansible_ssh_private_key_file="~/k",
              ansible_ssh_common_args='-o ProxyCommand="ssh -W %h:%p jump" -oServerAliveInterval=5'
                                      ' -J bastion -4',
              ansible_ssh_extra_args="-o 'UserKnownHostsFile /etc/lab_known_hosts'",
              ansible_become=True)
    h.check()
    assert h.ssh_options() == [("ProxyCommand", "ssh -W %h:%p jump"),
                               ("ServerAliveInterval", "5"), ("ProxyJump", "bastion"),
                               ("AddressFamily", "inet"),
                               ("UserKnownHostsFile", "/etc/lab_known_hosts")]
    cfg = h.ssh_config(Path("/run/tcplab/r1/labhost.sock"), "inv.yml").splitlines()
    # tcplab's own settings come first (ssh keeps the first value), the user's config last
    assert cfg[1:5] == ["Host *", "    ControlPath /run/tcplab/r1/labhost.sock",
                        "    ControlMaster no", "    BatchMode yes"]
    assert "    ProxyCommand ssh -W %h:%p jump" in cfg and "    Port 2222" in cfg
    assert "    User admin" in cfg and any(l.endswith("/k") and "IdentityFile" in l for l in cfg)
    assert cfg[-2:] == ["    Include ~/.ssh/config", "    Include /etc/ssh/ssh_config"]
    assert h.sudo() == ["sudo", "-n", "--"] and _host().sudo() == []


@pytest.mark.parametrize("vars_, needle", [
    ({"ansible_password": "x"}, "ansible_password is set, but tcplab logs in with keys only"),
    ({"ansible_become": "yes", "ansible_become_method": "su"}, "with `sudo -n` only"),
    ({"ansible_become": True, "ansible_become_user": "lab"}, "with `sudo -n` only"),
    ({"ansible_connection": "local"}, "ansible_connection=local: a lab host is reached over SSH"),
    ({"ansible_host": "{{ lookup('env', 'H') }}"}, "ansible_host is a template"),
    ({"ansible_host": "a b"}, "is not a host name or address"),
    ({"ansible_ssh_common_args": "-F /x"}, "'-F' is not an option tcplab's SSH understands"),
    ({"ansible_ssh_common_args": "-o 'Port"}, "cannot be split into words"),
])
def test_what_the_drive_connection_cannot_do_is_named(vars_, needle):
    with pytest.raises(LabError) as e:
        _host(**vars_).check()
    assert str(e.value).startswith("lab host lh1: ") and needle in str(e.value)


def test_only_ansible_and_tcplab_variables_leave_the_inventory():
    h = _host(ansible_user="root", tcplab_labhost_manage_packages=False, db_secret="s3cret")
    assert h.connection_vars() == {"ansible_host": "10.9.8.7", "ansible_user": "root",
                                   "tcplab_labhost_manage_packages": False}
    assert LabHost.from_record(h.record()) == LabHost("lh1", h.connection_vars())


# ----------------------------------------------------------------------------- inventories

def test_an_inventory_is_read_by_ansible_yaml_and_ini(tmp_path):
    (tmp_path / "inv.yml").write_text(textwrap.dedent("""\
        all:
          vars:
            ansible_user: root
          children:
            rack1:
              hosts:
                lhb: {ansible_host: 10.0.0.2}
                lha: {ansible_host: 10.0.0.1, ansible_port: 2200}
          hosts:
            lhc:
        """))
    hosts = read_inventory(tmp_path / "inv.yml")
    assert {h.name for h in hosts} == {"lha", "lhb", "lhc"}
    by = {h.name: h for h in hosts}
    assert by["lha"].vars["ansible_port"] == 2200 and by["lhb"].vars["ansible_user"] == "root"
    assert [h.name for h in hosts if h.name != "lhc"] == ["lhb", "lha"]   # the file's order
    (tmp_path / "inv.ini").write_text("[labhosts]\nlh9 ansible_host=10.0.0.9\n\n"
                                      "[labhosts:vars]\nansible_become=true\n")
    (ini,) = read_inventory(tmp_path / "inv.ini")
    assert ini.name == "lh9" and ini.address == "10.0.0.9" and ini.become


def test_a_bad_inventory_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(LabError, match=r"no inventory .*nope\.yml: give an Ansible inventory"):
        read_inventory(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("all: [unclosed\n")
    # ansible-core 2.19+ says "YAML parsing failed", 2.16 (Python 3.10) "Syntax Error while ..."
    with pytest.raises(LabError, match=r"Ansible cannot read the inventory .*bad\.yml \((YAML "
                                       r"parsing failed|Syntax Error while loading YAML): .*, "
                                       r"line 2\): fix it"):
        read_inventory(bad)
    ini = tmp_path / "bad.ini"
    ini.write_text("[labs\nlh1\n")
    with pytest.raises(LabError, match=r"bad\.ini \(.*\): fix it"):
        read_inventory(ini)
    empty = tmp_path / "empty.yml"
    empty.write_text("all:\n  hosts: {}\n")
    with pytest.raises(LabError, match="lists no hosts"):
        read_inventory(empty)


def test_each_hosts_outcome_is_read_from_a_real_playbook_run(tmp_path):
    """A host that passes, one that fails an assert, one that is unreachable (its SSH
    ProxyCommand is `false`: nothing is sent anywhere)."""
    (tmp_path / "inv.yml").write_text(textwrap.dedent(f"""\
        all:
          hosts:
            good: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}
            proud: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}
            away:
              ansible_host: 10.255.255.1
              ansible_ssh_common_args: -o ProxyCommand=false
        """))
    (tmp_path / "play.yml").write_text(textwrap.dedent("""\
        - name: Outcomes
          hosts: all
          gather_facts: false
          tasks:
            - name: Say who
              ansible.builtin.command: "echo {{ inventory_hostname }}"
              changed_when: false
            - name: Refuse proud
              ansible.builtin.assert:
                that: inventory_hostname != "proud"
                fail_msg: "tcplab needs root on lab host proud (...): log in as root"
        """))
    exe = Path(sys.executable).with_name("ansible-playbook")
    res = subprocess.run([str(exe), "-i", "inv.yml", "play.yml"], cwd=tmp_path, text=True,
                         capture_output=True, env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin",
                                                   "ANSIBLE_HOME": str(tmp_path / "a"),
                                                   "ANSIBLE_HOST_KEY_CHECKING": "0"})
    out = parse_play(res.stdout)
    assert out["good"].ok and out["good"].counts["ok"] == 2
    assert out["proud"].failed and not out["proud"].ok and out["proud"].task == "Refuse proud"
    assert host_problem(LabHost("proud"), out["proud"], "inv.yml") == \
        "tcplab needs root on lab host proud (...): log in as root"
    assert out["away"].unreachable and out["away"].counts["unreachable"] == 1
    line = host_problem(LabHost("away", {"ansible_host": "10.255.255.1"}), out["away"], "inv.yml")
    assert line.startswith("lab host away is unreachable over SSH (")
    assert "check its address (ansible_host=10.255.255.1)" in line and "inv.yml" in line


# ----------------------------------------------------------------------------- the backend

def _remote(prefix="r1", **vars_):
    return get_backend("remote", prefix, labhost=_host(**vars_), inventory="/x/inv.yml")


def test_a_remote_labs_commands_run_on_its_lab_host_over_ssh():
    b = _remote(ansible_become=True, ansible_python_interpreter="/usr/bin/python3.11")
    assert b.host_side_isolated and b.namespaces() == [] and b.host_namespace is None
    argv = b.drive_argv(["nc", "-u", "-w0", "192.168.56.100", "9"])
    assert argv[:4] == ["ssh", "-F", str(b.state_dir / "labhost.ssh_config"), "10.9.8.7"]
    assert shlex.split(argv[4]) == [
        "sudo", "-n", "--", "/usr/bin/python3.11", "-I", "-S",
        "/run/tcplab-labhost/harness/lab/onhost.py", "exec", "--",
        "ip", "netns", "exec", "r1-host", "nc", "-u", "-w0", "192.168.56.100", "9"]
    # an argument with quotes and spaces reaches the lab host intact (the remote shell splits)
    script = '[["send", "48 65"], ["recv", 2]]'
    assert shlex.split(b.drive_argv(["python3", "--script", script])[4])[-1] == script
    with pytest.raises(LabError, match="does not drive remote labs"):
        b.host_exec_prefix()


def test_a_remote_labs_vm_is_reached_through_its_lab_host():
    b = _remote()
    ep = b.ssh_endpoint()
    assert (ep.host, ep.port, ep.user) == ("192.168.56.100", 22, "root")
    assert ep.key_file == b.state_dir / "id_ed25519"
    assert ep.known_hosts == b.state_dir / "known_hosts"
    assert ep.proxy_command == (f"ssh -F {b.state_dir}/labhost.ssh_config 10.9.8.7 "
                                f"/usr/bin/python3 -I -S /run/tcplab-labhost/harness/lab/"
                                f"onhost.py exec -- ip netns exec r1-host nc %h %p")
    assert "'" not in ep.proxy_command         # it goes inside -o ProxyCommand='...' for Ansible
    # the lab's paths are the netns lab's, in the lab host's state root
    assert b.responder_dir() == "/run/tcplab/r1/vm/opt/tcplab"
    assert b.inventory_vars()["ansible_remote_tmp"] == "/run/tcplab/r1/vm/tmp"
    from harness.lab.netns import inventory_vars_in
    assert get_backend("netns", "r1").inventory_vars() == inventory_vars_in(
        get_backend("netns", "r1").state_dir)


def test_a_remote_lab_without_a_record_says_how_to_make_one():
    b = get_backend("remote", "r7")
    with pytest.raises(LabError, match=r"invoke up --hosts INVENTORY"):
        b.ssh_endpoint()


def test_the_runs_inventory_has_lab_hosts_and_their_lab_vms(tmp_path):
    from harness.lab.remote import _inventory
    h = _host(ansible_user="root", db_secret="s")
    b1, b2 = _remote("r1"), _remote("r2")
    inv = _inventory(tmp_path, [(h, [b1, b2], {"tcplab_labhost_action": "up",
                                               "tcplab_labhost_labs": {"r1": {}, "r2": {}}})])
    kids = inv["all"]["children"]
    lh = kids["tcplab_labhost"]["hosts"]["lh1"]
    assert lh["ansible_user"] == "root" and "db_secret" not in lh
    assert lh["tcplab_labhost_report"] == str(tmp_path / "reports" / "0.json")
    assert "dumpcap" in lh["tcplab_labhost_tools"] and lh["tcplab_labhost_python"]
    vm = kids["tcplab_remote_vm"]["hosts"]["r2"]
    assert vm["tcplab_labhost_name"] == "lh1" and vm["ansible_become"] is False
    assert vm["tcplab_responder_dir"] == "/run/tcplab/r2/vm/opt/tcplab"
    assert "ProxyCommand='ssh -F" in vm["ansible_ssh_common_args"]
    # one responder archive for every VM (the role packs it once: run_once)
    assert vm["tcplab_responder_archive"] == \
        kids["tcplab_remote_vm"]["hosts"]["r1"]["tcplab_responder_archive"]
    with pytest.raises(LabError, match="also hosts of the inventory"):
        _inventory(tmp_path, [(LabHost("r1", {}), [b1], {"tcplab_labhost_action": "up"})])


# ----------------------------------------------------------------------------- onhost exec

def test_onhost_exec_ends_its_command_when_the_reader_goes_away():
    """As when the local ssh of a capture is stopped: sshd closes the command's stdout."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(HOSTSIDE), "exec", "--", "sh",
                             "-c", "echo $$; exec sleep 60"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    child = int(proc.stdout.readline())
    proc.stdout.close()                          # the reader goes away
    assert proc.wait(timeout=10) == 128 + 15     # the command got SIGTERM
    time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_onhost_exec_passes_the_commands_output_and_status():
    res = subprocess.run([sys.executable, "-I", "-S", str(HOSTSIDE), "exec", "--", "sh", "-c",
                          "cat; echo err >&2; exit 3"], input=b"data", capture_output=True,
                         timeout=10)
    assert (res.returncode, res.stdout, res.stderr) == (3, b"data", b"err\n")
    res = subprocess.run([sys.executable, "-I", "-S", str(HOSTSIDE), "exec", "--",
                          "/nonexistent"], capture_output=True, timeout=10)
    assert res.returncode == 127 and b"cannot run /nonexistent" in res.stderr


def test_onhost_reports_are_json():
    """The agent's subcommands answer in one JSON object (here: `up` without keys for a lab
    fails that lab, with its reason, and the others are unaffected)."""
    from harness.lab.onhost import labs_up
    res = labs_up(["z1"], {})
    assert res == {"labs": {"z1": {"ok": False, "error": "no SSH keys for lab 'z1' from the "
                                                         "controller"}}, "changed": False}
    json.dumps(res)
