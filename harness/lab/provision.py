"""Provision the lab VM with ``provision/site.yml`` over SSH, the same for every backend.

The backend supplies the SSH endpoint and its own variables; this module writes the inventory
into the lab's state directory, runs ``ansible-playbook`` from the project's venv with every
Ansible path (home, and so its plugin and collection paths; temp files; SSH control sockets)
inside that state directory -- checked to be root's alone first, since Ansible imports plugins
from there -- shows each task as progress, and returns the play recap's counts so callers (and
the idempotence test) can see what changed.

The RST block's rule is written once, in :func:`responder.contract.rst_rule`; the inventory
passes the role ``tcplab_rst_block`` its two facts (port and mark) from the contract, and the
role's defaults (what Vagrant's own provisioner uses) equal them.  A unit test renders the
role's rule with Ansible's templating and compares it with ``rst_rule()``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from harness.lab.base import ANSIBLE_DIRS, LAB_PORT, RST_MARK, Backend, responder_tree_hash
from harness.lab.state import write_file
from harness.util import PROJECT_ROOT, LabError, progress, stream

PLAYBOOK = PROJECT_ROOT / "provision" / "site.yml"
RECAP_RE = re.compile(r"^labvm\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$", re.M)


def inventory_hostvars(backend: Backend) -> dict:
    """The variables of the inventory's one host ``labvm``."""
    ep = backend.ssh_endpoint()
    hostvars = {
        "ansible_host": ep.host,
        "ansible_port": ep.port,
        "ansible_user": ep.user,
        "ansible_ssh_private_key_file": str(ep.key_file),
        "ansible_ssh_common_args": ep.ansible_ssh_args(backend.state_dir / "ansible" / "cp"),
        "ansible_python_interpreter": "/usr/bin/python3",
        "tcplab_rst_block_port": LAB_PORT,
        "tcplab_rst_block_mark": hex(RST_MARK),
        "tcplab_responder_dir": backend.responder_dir(),
        "tcplab_responder_archive": str(backend.state_dir / "ansible" / "responder.tar"),
    }
    hostvars.update(backend.inventory_vars())
    return hostvars


def write_inventory(backend: Backend) -> Path:
    inv = {"all": {"children": {"tcplab_vm": {"hosts": {"labvm": inventory_hostvars(backend)}}}}}
    return backend.state.write("inventory.json", json.dumps(inv, indent=2) + "\n")


def ansible_paths(state_dir: Path) -> dict:
    """Every path Ansible writes or loads plugins from, inside a lab's state directory
    (``ANSIBLE_HOME`` derives the plugin, collection, role and persistent-connection paths).
    Also given to Vagrant's own Ansible provisioner."""
    a = state_dir / "ansible"
    return {"ANSIBLE_HOME": str(a / "home"), "ANSIBLE_LOCAL_TEMP": str(a / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(a / "cp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(a / "cp")}


def ansible_env(backend: Backend | Path) -> dict:
    """Ansible's environment: the project's config, and its paths (:func:`ansible_paths`) in
    ``backend``'s state directory (or in the directory ``backend``: a run over many labs)."""
    env = dict(os.environ)
    env.update(ansible_paths(backend if isinstance(backend, Path) else backend.state_dir))
    env.update({
        "ANSIBLE_CONFIG": str(PROJECT_ROOT / "provision" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def ansible_show(verbose: bool):
    """A line handler for :func:`harness.util.stream` of ``ansible-playbook``: its whole output
    (``verbose``), or each task, and each host that failed, as a progress line."""
    def show(line: str) -> None:
        if verbose:
            print(line, file=sys.stderr, flush=True)
        elif line.startswith("TASK ["):
            progress("  " + line.strip().strip("*").strip())
        elif line.startswith("fatal: ["):
            progress("  " + line.split(" => ")[0])
    return show


def provision(backend: Backend, *, verbose: bool = False, timeout: float = 600) -> dict:
    """Run the playbook against the lab VM; return the recap counts (ok, changed, failed...).
    Records the responder's source hash so ``invoke demo`` redeploys only after a change."""
    if not backend.state.check():
        raise LabError(f"lab '{backend.prefix}' has no state directory {backend.state_dir}: "
                       f"run `invoke up` first")
    backend.state.prepare(*ANSIBLE_DIRS)
    inv = write_inventory(backend)
    exe = Path(sys.executable).with_name("ansible-playbook")
    if not exe.exists():
        raise LabError(f"{exe} not found; run `sudo ./bootstrap` to install the venv")
    progress(f"provisioning with Ansible: {os.path.relpath(PLAYBOOK, PROJECT_ROOT)}")
    res = stream([str(exe), "-i", str(inv), str(PLAYBOOK)], show=ansible_show(verbose),
                 timeout=timeout,
                 env=ansible_env(backend), cwd=PROJECT_ROOT, what="ansible-playbook",
                 check=False)
    output = res.stdout
    m = RECAP_RE.search(output)
    counts = {k: int(v) for k, v in (kv.split("=") for kv in m.group("counts").split())} \
        if m else {}
    if res.returncode != 0 or not m:
        log = backend.state.write("ansible.log", output)
        fails = [l.strip() for l in output.splitlines()
                 if l.startswith(("fatal:", "failed:", "ERROR!"))]
        raise LabError(f"provisioning failed ({fails[-1][:300] if fails else 'see log'}); "
                       f"full output in {log}")
    backend.write_meta(provisioned_hash=responder_tree_hash(), provision_recap=counts)
    return counts


def bring_up(backend: Backend, *, verbose: bool = False, force: bool = False) -> dict:
    """Make the lab and provision it: what ``invoke up`` and ``invoke demo`` both do.

    Idempotent: a lab that is up is not remade, and the playbook reruns only when ``force`` is
    set, the lab was never provisioned, or the responder's sources changed since.  When the lab
    did not exist before and any step fails, what was made is removed again.  Returns the
    recap counts of the playbook run ({} when it did not run) and the step timings."""
    fresh = not backend.exists()
    timings = {}
    try:
        t0 = time.monotonic()
        if fresh or not backend.status().get("up"):
            backend.up()
        timings["up_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        recap = {}
        stale = backend.read_meta().get("provisioned_hash") != responder_tree_hash()
        # A backend whose up() just made an already provisioned VM (qemu resuming its snapshot
        # of a guest this playbook provisioned) needs no forced rerun.
        if stale or (force and not getattr(backend, "provisioned_by_up", False)):
            recap = provision(backend, verbose=verbose)
        timings["provision_s"] = time.monotonic() - t0
    except BaseException as exc:
        if not fresh:
            raise
        # The state directory goes with the lab: keep the playbook's log where it survives.
        kept = None
        log = backend.state_dir / "ansible.log"
        if log.exists():
            kept = backend.state.failed_up_log
            write_file(kept, log.read_bytes())
        progress(f"removing what the failed `up` made of lab '{backend.prefix}'")
        backend.down()
        if kept and isinstance(exc, LabError):
            raise LabError(str(exc).replace(str(log), str(kept))) from exc
        raise
    return {"recap": recap, "timings": timings}
