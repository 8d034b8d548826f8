"""Provisioning's inputs, without a lab: the RST rule the Ansible role renders is the
contract's, and every path Ansible uses is inside the lab's state directory."""

from __future__ import annotations

import re

import pytest
import yaml

from harness.lab import get_backend
from harness.lab.provision import ansible_env, inventory_hostvars
from responder import contract
from tests.conftest import ROOT

ROLE = ROOT / "provision" / "roles" / "tcplab_rst_block"


@pytest.fixture(autouse=True)
def _state_root(monkeypatch):
    monkeypatch.setenv("TCPLAB_STATE_ROOT", "/run/tcplab-unit-never-made")


def _render(variables: dict) -> list[str]:
    """The role's rule as Ansible templates it (``vars/main.yml`` with ``variables``), each
    argument as the command module passes it (a string)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template
    rule = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["tcplab_rst_block_rule"]
    templar = Templar(loader=DataLoader(), variables=variables)
    return [str(a) for a in templar.template([trust_as_template(a) for a in rule])]


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
                                                       "ANSIBLE_FORCE_COLOR")}
    assert {"ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_SSH_CONTROL_PATH_DIR"} <= set(paths)
    for k, v in paths.items():
        assert v.startswith(str(b.state_dir) + "/"), (k, v)
    hv = inventory_hostvars(b)
    for k in ("ansible_remote_tmp", "ansible_async_dir", "ansible_ssh_private_key_file",
              "tcplab_responder_archive"):
        assert hv[k].startswith(str(b.state_dir) + "/"), (k, hv[k])
    assert f"ControlPath={b.state_dir}/ansible/cp/" in hv["ansible_ssh_common_args"]
