"""The tcplab_responder role as Vagrant's Ansible provisioner runs it on a laptop: the packing
step runs on the controller as the user (never through sudo), the VM's tasks through `become`,
and the archive sits in a private directory, not at a fixed name under /tmp.

The provisioner's settings are read from the real ``Vagrantfile`` by loading it in Ruby with a
recording stand-in for ``Vagrant.configure`` (its ``before`` triggers run too, as Vagrant runs
them before provisioning).  The "VM" is this machine through Ansible's local connection, with
``sudo`` replaced by a pass-through that logs each call, so the test needs no VM and no root,
and it sees exactly which tasks asked for privileges.  Also: the archive module is portable and
deterministic (``files/pack.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

ROLE = ROOT / "provision" / "roles" / "tcplab_responder"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

# Loads the Vagrantfile with a stand-in Vagrant that records every setting; prints the Ansible
# provisioner's settings as JSON after running the `before` triggers' Ruby blocks.
RUBY_RECORDER = r'''
require "json"
class Rec
  attr_reader :h, :triggers
  def initialize; @h = {}; @triggers = []; end
  def provider_name; :recorder; end
  def method_missing(name, *args, &blk)
    n = name.to_s
    return (@h[n.chomp("=")] = args[0]) if n.end_with?("=")
    if n == "provision" && args[0] == "ansible"
      r = Rec.new; blk.call(r); $ansible = r.h; return nil
    end
    if n == "before"
      t = Rec.new; blk.call(t); $triggers << [args[0], t]; return nil
    end
    if n == "ruby" then @h["ruby"] = blk; return nil end
    if blk then blk.call(Rec.new); return nil end
    @h.fetch(n) { Rec.new }
  end
  def respond_to_missing?(*)
    true
  end
end
$triggers = []
module Vagrant
  def self.configure(_version); yield Rec.new; end
end
load ARGV[0]
$triggers.each do |on, t|
  next unless Array(on).include?(:provision) || Array(on).include?(:up)
  t.h["ruby"]&.call(nil, Rec.new)
end
puts JSON.generate($ansible)
'''

FAKE_SUDO = """#!/bin/sh
# Stands in for sudo: logs the call, drops sudo's own options, runs the command as is.
echo "$*" >> "{log}"
while [ $# -gt 0 ]; do
  case "$1" in -u) shift 2 ;; -*) shift ;; *) break ;; esac
done
exec "$@"
"""


def vagrant_ansible_settings(dotfile: Path) -> dict:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (Vagrant brings it: packages/apt-vm.txt)")
    res = subprocess.run(["ruby", "-e", RUBY_RECORDER, str(ROOT / "Vagrantfile")],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, VAGRANT_DOTFILE_PATH=str(dotfile)))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def task_sections(output: str) -> dict[str, str]:
    """The -vvv output of each task, by task name."""
    parts = re.split(r"^TASK \[(?:[\w.]+ : )?(.+?)\] \**$", output, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def run_role(tmp_path: Path, settings: dict) -> tuple[subprocess.CompletedProcess, str]:
    sudo_log = tmp_path / "sudo.log"
    fake_sudo = tmp_path / "fake-sudo"
    fake_sudo.write_text(FAKE_SUDO.format(log=sudo_log))
    fake_sudo.chmod(0o755)
    hostvars = dict(settings["host_vars"]["default"], ansible_connection="local")
    groups = {g: {"hosts": {h: hostvars for h in hosts}}
              for g, hosts in settings["groups"].items()}
    (tmp_path / "inventory.json").write_text(json.dumps({"all": {"children": groups}}))
    (tmp_path / "play.yml").write_text(
        "- name: The responder role alone\n  hosts: tcplab_vm\n  become: false\n"
        "  roles:\n    - role: tcplab_responder\n")
    # The Vagrantfile's extra vars, then what makes this machine the "VM" (extra vars too, so
    # for every host: any `become`, also on localhost, goes through the logging sudo, and as
    # another user, since Ansible skips a become to the user it already is).
    extra = dict(settings["extra_vars"], tcplab_responder_dir=str(tmp_path / "vm"),
                 tcplab_responder_src=str(ROOT / "responder"),
                 ansible_become_exe=str(fake_sudo), ansible_become_user="nobody")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / settings["config_file"]),
               ANSIBLE_ROLES_PATH=str(ROOT / "provision" / "roles"),
               ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "rtmp"), ANSIBLE_NOCOLOR="1")
    res = subprocess.run([str(ANSIBLE_PLAYBOOK), "-vvv", "-i", str(tmp_path / "inventory.json"),
                          "-e", json.dumps(extra), str(tmp_path / "play.yml")],
                         capture_output=True, text=True, env=env, timeout=300)
    log = sudo_log.read_text() if sudo_log.exists() else ""
    sudo_log.unlink(missing_ok=True)
    return res, log


def test_vagrant_provisioner_packs_without_sudo_and_privately(tmp_path):
    dot = tmp_path / "dot"
    settings = vagrant_ansible_settings(dot)
    pack_dir = dot / "tcplab"
    archive = Path(settings["extra_vars"]["tcplab_responder_archive"])
    assert archive.parent == pack_dir and not str(archive).startswith("/tmp/tcplab")
    st = os.lstat(pack_dir)                  # made by the Vagrantfile's trigger, before `up`
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700

    res, sudo_calls = run_role(tmp_path, settings)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    sections = task_sections(res.stdout)
    pack = next(v for k, v in sections.items() if k.startswith("Pack the responder"))
    unpack = sections["Unpack the responder's sources"]
    fake = str(tmp_path / "fake-sudo")
    assert fake not in pack, "the packing step on the controller went through sudo"
    assert fake in unpack, "the VM's tasks did not become root"
    assert sudo_calls.count("-u nobody") >= 3, sudo_calls
    assert (tmp_path / "vm" / "responder" / "__main__.py").is_file()
    assert archive.is_file() and stat.S_IMODE(archive.stat().st_mode) == 0o600

    res2, _ = run_role(tmp_path, settings)
    assert res2.returncode == 0, res2.stdout[-3000:]
    assert re.search(r"^default\s*:.*\bchanged=0\b", res2.stdout, re.M), res2.stdout[-1500:]


def test_pack_is_deterministic_and_leaves_out_caches(tmp_path):
    src = tmp_path / "src"
    (src / "__pycache__").mkdir(parents=True)
    (src / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (src / "b.py").write_text("B = 1\n")
    (src / "a.py").write_text("A = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o700)
    pack = [sys.executable, str(ROLE / "files" / "pack.py")]
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    assert subprocess.run(pack + [str(src), str(one)], capture_output=True,
                          text=True).stdout == "changed\n"
    os.utime(src / "a.py", (1e9, 1e9))                      # another mtime, same bytes
    assert subprocess.run(pack + [str(src), str(two)], capture_output=True,
                          text=True).stdout == "changed\n"
    assert one.read_bytes() == two.read_bytes()
    assert subprocess.run(pack + [str(src), str(one)], capture_output=True,
                          text=True).stdout == "unchanged\n"
    with tarfile.open(one) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["a.py", "b.py", "run.sh"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    assert [i.mode for i in infos] == [0o644, 0o644, 0o755]
    (src / "a.py").write_text("A = 2\n")
    assert subprocess.run(pack + [str(src), str(one)], capture_output=True,
                          text=True).stdout == "changed\n"
