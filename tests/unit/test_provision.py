"""Provisioning's inputs, without a lab: the RST rule the Ansible role renders is the
contract's, and every path Ansible uses is inside the lab's state directory."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.lab import get_backend
from harness.lab.provision import ansible_env, inventory_hostvars
from responder import contract
from tests.conftest import ROOT

ROLE = ROOT / "provision" / "roles" / "tcplab_rst_block"
VM_ROLE = ROOT / "provision" / "roles" / "tcplab_vm"


@pytest.fixture(autouse=True)
def _state_root(monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_ROOT", "/run/tcplab-unit-never-made")


def _template(role: Path, name: str, variables: dict):
    """The variable ``name`` of ``role``'s ``vars/main.yml`` as Ansible templates it with
    ``variables`` (a string, or a list of templated strings)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    try:        # ansible-core >= 2.19 templates only strings marked as trusted (from a file)
        from ansible.template import trust_as_template
    except ImportError:         # 2.16-2.18 (Python 3.10's controller) template every string
        def trust_as_template(a):
            return a
    value = yaml.safe_load((role / "vars" / "main.yml").read_text())[name]
    templar = Templar(loader=DataLoader(), variables=variables)
    if isinstance(value, list):
        return templar.template([trust_as_template(a) for a in value])
    return templar.template(trust_as_template(value))


def _render(variables: dict) -> list[str]:
    """The role's rule as Ansible templates it (``vars/main.yml`` with ``variables``), each
    argument as the command module passes it (a string)."""
    return [str(a) for a in _template(ROLE, "tcplab_rst_block_rule", variables)]


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_role_defaults_render_the_contracts_rule():
    """What Vagrant's own provisioner uses (the role's defaults) is contract.rst_rule()."""
    assert _render(_defaults()) == contract.rst_rule()
    assert _render(_defaults()) == contract.rst_rule(contract.LAB_PORT, contract.DEFAULT_MARK)


def test_harness_inventory_renders_the_contracts_rule():
    hv = inventory_hostvars(get_backend("netns", "prov1"))
    assert _render(hv) == contract.rst_rule(contract.LAB_PORT, contract.DEFAULT_MARK)


@pytest.mark.parametrize("port, mark", [(8081, 0x11), (443, 0x5E)])
def test_the_role_follows_its_variables(port, mark):
    """The comparison can fail: other facts render another rule, equal to rst_rule's."""
    rendered = _render({"tcplab_rst_block_port": port, "tcplab_rst_block_mark": hex(mark)})
    assert rendered == contract.rst_rule(port, mark)
    assert rendered != contract.rst_rule() or (port, mark) == (contract.LAB_PORT,
                                                               contract.DEFAULT_MARK)


@pytest.mark.parametrize("runtime", sorted(contract.RUNTIMES))
def test_the_vm_role_wants_the_runtimes_package_and_finds_what_is_missing(runtime):
    """The tcplab_vm role asks apt only for what dpkg lacks (so a VM with every package never
    reaches for a mirror; tests/e2e/test_qemu.py runs it in a guest without one)."""
    variables = {**yaml.safe_load((VM_ROLE / "defaults" / "main.yml").read_text()),
                 "tcplab_runtime": runtime}
    wanted = list(_template(VM_ROLE, "tcplab_vm_wanted", variables))
    assert Path(contract.RUNTIMES[runtime]).name in wanted          # python3 or pypy3
    assert ("pypy3" in wanted) == (runtime == "pypy")
    script = _template(VM_ROLE, "tcplab_vm_missing_script", variables)
    missing = subprocess.run(["sh", "-c", str(script), "missing", "dpkg", "tcplab-no-such-pkg"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 0 and missing.stdout == "tcplab-no-such-pkg\n", missing


def test_argument_specs_defaults_match_the_defaults():
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    opts = specs["argument_specs"]["main"]["options"]
    assert {k: v["default"] for k, v in opts.items()} == _defaults()


def test_vagrantfile_does_not_override_the_rules_facts():
    text = (ROOT / "Vagrantfile").read_text()
    assert not re.search(r"^\s*tcplab_rst_block_\w+:", text, re.M)


def test_every_ansible_path_is_inside_the_state_dir(monkeypatch):
    import os
    for k in [k for k in os.environ if k.startswith("ANSIBLE_")]:
        monkeypatch.delenv(k)
    b = get_backend("netns", "prov2")
    env = ansible_env(b)
    paths = {k: v for k, v in env.items()
             if k.startswith("ANSIBLE_") and k not in ("ANSIBLE_CONFIG", "ANSIBLE_NOCOLOR",
                                                       "ANSIBLE_FORCE_COLOR", "ANSIBLE_FORKS",
                                                       "ANSIBLE_STRATEGY",
                                                       "ANSIBLE_STRATEGY_PLUGINS")}
    assert {"ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_SSH_CONTROL_PATH_DIR"} <= set(paths)
    for k, v in paths.items():
        assert v.startswith(str(b.state_dir) + "/"), (k, v)
    hv = inventory_hostvars(b)
    for k in ("ansible_remote_tmp", "ansible_async_dir", "ansible_ssh_private_key_file",
              "tcplab_responder_archive"):
        assert hv[k].startswith(str(b.state_dir) + "/"), (k, hv[k])
    monkeypatch.setenv("TCPLAB_ANSIBLE_STRATEGY", "linear")       # a control master per lab
    assert f"ControlPath={b.state_dir}/ansible/cp/" in inventory_hostvars(b)[
        "ansible_ssh_common_args"]
    monkeypatch.setenv("TCPLAB_ANSIBLE_STRATEGY", "mitogen")      # none: nothing outlives it
    assert "Control" not in inventory_hostvars(b)["ansible_ssh_common_args"]


# A real run over three labs (pmm1 fine, pmm2's sshd killed, pmm3's responder directory a
# file), trimmed: what ansible-playbook 2.19 with Mitogen printed.
THREE_LABS = """\
TASK [tcplab_vm : Check that the commands the responder and the RST block use exist] ***
fatal: [pmm2]: UNREACHABLE! => {"changed": false, "msg": "Task failed: EOF on stream; last 100 \
lines received:\\nkex_exchange_identification: Connection closed by remote host", "unreachable": true}
ok: [pmm1]
ok: [pmm3]

TASK [tcplab_responder : Pack the responder's sources on the controller (a build step, changes \
no host)] ***
ok: [pmm1 -> localhost]

TASK [tcplab_responder : Create the responder's package directory] *************
[ERROR]: Task failed: Module failed: There was an issue creating /x/responder as requested
fatal: [pmm3]: FAILED! => {"changed": false, "msg": "There was an issue creating /x/responder \
as requested: [Errno 20] Not a directory: b'/x/responder'", "path": "/x/responder"}
changed: [pmm1]

PLAY RECAP *********************************************************************
pmm1                       : ok=10   changed=3    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
pmm2                       : ok=1    changed=0    unreachable=1    failed=0    skipped=1    rescued=0    ignored=0
pmm3                       : ok=6    changed=1    unreachable=0    failed=1    skipped=1    rescued=0    ignored=0
"""


def test_parse_output_gives_each_lab_its_recap_and_its_first_failure():
    from harness.lab.provision import parse_output
    recaps, failures = parse_output(THREE_LABS)
    assert recaps["pmm1"]["changed"] == 3 and recaps["pmm2"]["unreachable"] == 1
    assert recaps["pmm3"]["failed"] == 1 and set(recaps) == {"pmm1", "pmm2", "pmm3"}
    assert set(failures) == {"pmm2", "pmm3"}
    assert failures["pmm2"] == ("TASK [tcplab_vm : Check that the commands the responder and the "
                                "RST block use exist] unreachable: Task failed: EOF on stream; "
                                "last 100 lines received: / kex_exchange_identification: "
                                "Connection closed by remote host")
    assert failures["pmm3"].startswith("TASK [tcplab_responder : Create the responder's package "
                                       "directory] failed: There was an issue creating")
    assert "\n" not in failures["pmm2"]


def test_inventory_of_several_labs_names_each_host_by_its_prefix_and_shares_the_archive(tmp_path):
    from harness.lab.provision import inventory
    labs = [get_backend("netns", p) for p in ("inva", "invb")]
    hosts = inventory(labs, tmp_path / "responder.tar")["all"]["children"]["tcplab_vm"]["hosts"]
    assert list(hosts) == ["inva", "invb"]
    assert {h["tcplab_responder_archive"] for h in hosts.values()} == {
        str(tmp_path / "responder.tar")}
    for lab in labs:                # each lab keeps its own key and known_hosts
        assert hosts[lab.prefix]["ansible_ssh_private_key_file"].startswith(str(lab.state_dir))
        assert f"UserKnownHostsFile={lab.state_dir}/known_hosts" in \
            hosts[lab.prefix]["ansible_ssh_common_args"]


def test_the_strategy_is_mitogen_from_the_venv_unless_linear_is_asked(monkeypatch):
    import sys
    from harness.lab.provision import STRATEGY_ENV, strategy_env
    from harness.util import LabError
    monkeypatch.delenv(STRATEGY_ENV, raising=False)
    env = strategy_env()
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert env["ANSIBLE_STRATEGY_PLUGINS"].startswith(sys.prefix + "/")
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
    monkeypatch.setenv(STRATEGY_ENV, "linear")
    assert strategy_env() == {}
    monkeypatch.setenv(STRATEGY_ENV, "fast")
    with pytest.raises(LabError, match="use mitogen"):
        strategy_env()
