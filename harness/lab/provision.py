"""Provision lab VMs with ``provision/site.yml`` over SSH, the same for every backend: one lab,
or many labs in ONE ``ansible-playbook`` run.

The backend supplies the SSH endpoint and its own variables; this module writes the inventory
(one host per lab, named by its prefix), runs ``ansible-playbook`` from the project's venv with
every Ansible path (home, and so its plugin and collection paths; temp files) in a directory
only root can write -- the lab's state directory for one lab, a private run directory in the
state root for several (each host keeps its key and known_hosts in its own lab's directory) --
shows each task as progress, and returns each lab's play recap counts so callers (and the
idempotence test) can see what changed.  One lab that fails (unreachable, a task failed) is
named with the task and the message; the others go on (Ansible's own per-host handling, with
``forks`` as wide as the labs, up to :data:`FORKS_MAX`; ``timeout = 30`` in ansible.cfg: 40
labs connecting at once on 2 busy cores took longer than Ansible's default 10 s).

Speed (issue 13): Ansible runs with Mitogen's ``mitogen_linear`` strategy (``mitogen`` in
requirements.txt): one Python interpreter per lab VM for the whole play instead of one per
task.  Measured here (2 cores, shared): the playbook from nothing ~5.2 s -> ~2.6 s with
ansible-core 2.16.19, 2.19.14 and 2.21.5 alike; a second run still reports ``changed=0``.
``TCPLAB_ANSIBLE_STRATEGY=linear`` runs Ansible's own strategy instead (Vagrant's provisioner
always does: it reads only ``ansible.cfg``).

The RST block's rule is written once, in :func:`responder.contract.rst_rule`; the inventory
passes the role ``tcplab_rst_block`` its two facts (port and mark) from the contract, and the
role's defaults (what Vagrant's own provisioner uses) equal them.  A unit test renders the
role's rule with Ansible's templating and compares it with ``rst_rule()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.lab.base import ANSIBLE_DIRS, LAB_PORT, RST_MARK, Backend, responder_tree_hash
from harness.lab.state import trusted_root, write_file
from harness.util import PROJECT_ROOT, LabError, progress, progress_tag, stream

PLAYBOOK = PROJECT_ROOT / "provision" / "site.yml"
RECAP_RE = re.compile(r"^(?P<host>[a-z][a-z0-9]*)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$", re.M)
#: ``fatal: [HOST]: FAILED! => {...}`` (also ``failed: [HOST -> localhost] ...``, UNREACHABLE)
FAIL_RE = re.compile(r"^(?:fatal|failed): \[(?P<host>[a-z][a-z0-9]*)(?: -> [^\]]*)?\]"
                     r"(?: \(item=.*\))?: (?P<kind>FAILED|UNREACHABLE)! => (?P<body>.*)$")
TASK_RE = re.compile(r"^TASK \[(?P<task>.*?)\] \**$")
STRATEGY_ENV = "TCPLAB_ANSIBLE_STRATEGY"
#: Ansible's forks for a run over many labs: one per lab up to this many.  Measured here with
#: 40 labs (2 cores, load 11-14): forks 10, 20, 40 took 34.8-38.7, 33.8-34.7, 35.8-37.4 s;
#: 20 is as fast as any and holds half the workers' memory of 40.
FORKS_MAX = 20
#: Private directory of a run over several labs, in the state root (``labs.leftovers`` knows it).
RUN_DIR_PREFIX = "ansible-run-"
#: Labs brought up (namespaces, sshd) at the same time by :func:`bring_up_many`.
UP_WORKERS = 6


# --- the inventory ----------------------------------------------------------------------------

def inventory_hostvars(backend: Backend) -> dict:
    """The variables of one lab's host in the inventory (the host is named by the prefix).
    Under Mitogen no SSH ControlPersist master is asked for: Mitogen keeps one connection per
    lab for the play and closes it at the end, so no ssh process outlives the playbook."""
    ep = backend.ssh_endpoint()
    hostvars = {
        "ansible_host": ep.host,
        "ansible_port": ep.port,
        "ansible_user": ep.user,
        "ansible_ssh_private_key_file": str(ep.key_file),
        "ansible_ssh_common_args": ep.ansible_ssh_args(
            None if strategy_env() else backend.state_dir / "ansible" / "cp"),
        "ansible_python_interpreter": "/usr/bin/python3",
        "tcplab_rst_block_port": LAB_PORT,
        "tcplab_rst_block_mark": hex(RST_MARK),
        "tcplab_responder_dir": backend.responder_dir(),
        "tcplab_responder_archive": str(backend.state_dir / "ansible" / "responder.tar"),
    }
    hostvars.update(backend.inventory_vars())
    return hostvars


def inventory(backends: list[Backend], archive: Path | None = None) -> dict:
    """The inventory of ``backends``: group ``tcplab_vm``, one host per lab named by its prefix.
    With ``archive``, every host shares that responder archive (it is packed once per run)."""
    hosts = {}
    for b in backends:
        hv = inventory_hostvars(b)
        if archive is not None:
            hv["tcplab_responder_archive"] = str(archive)
        hosts[b.prefix] = hv
    return {"all": {"children": {"tcplab_vm": {"hosts": hosts}}}}


def write_inventory(backend: Backend) -> Path:
    inv = inventory([backend])
    return backend.state.write("inventory.json", json.dumps(inv, indent=2) + "\n")


# --- Ansible's environment --------------------------------------------------------------------

def _paths(home: Path) -> dict:
    return {"ANSIBLE_HOME": str(home / "home"), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(home / "cp")}


def ansible_paths(state_dir: Path) -> dict:
    """Every path Ansible writes or loads plugins from, inside a lab's state directory
    (``ANSIBLE_HOME`` derives the plugin, collection, role and persistent-connection paths).
    Also given to Vagrant's own Ansible provisioner."""
    return _paths(state_dir / "ansible")


def strategy_env() -> dict:
    """The strategy's settings: Mitogen's ``mitogen_linear`` from the venv (default), or
    nothing (Ansible's ``linear``) with ``TCPLAB_ANSIBLE_STRATEGY=linear``."""
    choice = os.environ.get(STRATEGY_ENV, "mitogen")
    if choice == "linear":
        return {}
    if choice != "mitogen":
        raise LabError(f"{STRATEGY_ENV}={choice!r}: use mitogen (the default) or linear")
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"Mitogen for Ansible is not installed in {sys.prefix} (`sudo "
                       f"./bootstrap` installs requirements.txt), or set {STRATEGY_ENV}=linear")
    plugins = Path(list(spec.submodule_search_locations)[0]) / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


def _env(home: Path, forks: int = 5) -> dict:
    env = dict(os.environ)
    env.update(_paths(home))
    env.update(strategy_env())
    env.update({
        "ANSIBLE_CONFIG": str(PROJECT_ROOT / "provision" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_FORKS": str(forks),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def ansible_env(where: Backend | Path) -> dict:
    """Ansible's environment for one lab: the project's config, the strategy, and its paths
    (:func:`ansible_paths`) in the lab's state directory (or in the directory ``where``: a
    fleet run over lab hosts)."""
    return _env((where if isinstance(where, Path) else where.state_dir) / "ansible")


def ansible_show(verbose: bool, log=progress):
    """A line handler for :func:`harness.util.stream` of ``ansible-playbook``: its whole output
    (``verbose``), or each task, and each host that failed, as a progress line."""
    def show(line: str) -> None:
        if verbose:
            print(line, file=sys.stderr, flush=True)
        elif line.startswith("TASK ["):
            log("  " + line.strip().strip("*").strip())
        elif line.startswith("fatal: ["):
            log("  " + line.split(" => ")[0])
    return show


@contextlib.contextmanager
def _run_home(backends: list[Backend]):
    """Where one run keeps Ansible's home, temp files and the responder's archive: the lab's
    own ``ansible/`` for one lab; for several, a fresh 0700 directory in the (trusted) state
    root, locked while the run lasts and removed after it (``down --all`` removes one a killed
    run left)."""
    if len(backends) == 1:
        backends[0].state.prepare(*ANSIBLE_DIRS)
        yield backends[0].state_dir / "ansible"
        return
    root = trusted_root(create=True)
    home = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=root))      # 0700, root's
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for sub in ("cp", "tmp", "home"):
            os.mkdir(home / sub, 0o700)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
        os.close(fd)


# --- one run over many labs -------------------------------------------------------------------

@dataclass
class Provisioned:
    """What the playbook did to one lab: its recap counts, or what failed."""

    prefix: str
    ok: bool
    recap: dict = field(default_factory=dict)
    error: str = ""                 # "TASK [role : name]: message", "unreachable: ...", ...
    log: Path | None = None         # the playbook's whole output, for a lab that failed


def parse_output(output: str) -> tuple[dict, dict]:
    """From ``ansible-playbook``'s default output: {host: recap counts} and {host: the first
    failure, "TASK [...]: message"}."""
    recaps = {m.group("host"): {k: int(v) for k, v in
                                (kv.split("=") for kv in m.group("counts").split())}
              for m in RECAP_RE.finditer(output)}
    failures: dict = {}
    task = "before any task"
    for line in output.splitlines():
        m = TASK_RE.match(line)
        if m:
            task = m.group("task")
            continue
        m = FAIL_RE.match(line)
        if m and m.group("host") not in failures:
            failures[m.group("host")] = f"TASK [{task}] {m.group('kind').lower()}: " \
                                        f"{_message(m.group('body'))}"
    return recaps, failures


def _message(body: str) -> str:
    """The useful part of a failed result's JSON: msg, and stderr when there is one."""
    try:
        res = json.loads(body)
    except ValueError:
        return body[:300]
    if not isinstance(res, dict):
        return body[:300]
    parts = [str(res.get("msg", "")).strip()]
    err = str(res.get("stderr", "") or res.get("module_stderr", "")).strip()
    if err and err not in parts[0]:
        parts.append(err.splitlines()[-1])
    text = " / ".join(p for p in parts if p) or body
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())[:300]


def provision_many(backends: list[Backend], *, verbose: bool = False, timeout: float = 900,
                   log=progress) -> dict[str, Provisioned]:
    """Run the playbook ONCE over every lab of ``backends`` (forks: one per lab, up to
    :data:`FORKS_MAX`); return {prefix: Provisioned} in the order given.  Never raises for a
    lab that fails: it is reported (the task and the message; the playbook's whole output in
    its ``ansible.log``) and the others go on.  A lab without a state directory is not run.
    Records each provisioned lab's responder hash, so ``invoke demo`` redeploys only after a
    change.  This is what ``invoke up --labs N`` uses, and what a fleet of remote labs can use:
    each backend only needs ``state``, ``prefix``, ``ssh_endpoint()``, ``responder_dir()`` and
    ``inventory_vars()``."""
    if len({b.prefix for b in backends}) != len(backends):
        raise LabError("provision_many: the same lab twice in one run")
    out = {b.prefix: Provisioned(b.prefix, False) for b in backends}
    ready = []
    for b in backends:
        if b.state.check():
            ready.append(b)
        else:
            out[b.prefix].error = f"no state directory {b.state_dir}: run `invoke up` first"
    if not ready:
        return out
    exe = Path(sys.executable).with_name("ansible-playbook")
    if not exe.exists():
        raise LabError(f"{exe} not found; run `sudo ./bootstrap` to install the venv")
    many = len(ready) > 1
    log(f"provisioning with Ansible: {os.path.relpath(PLAYBOOK, PROJECT_ROOT)}"
        + (f" ({len(ready)} labs, one run)" if many else ""))
    with _run_home(ready) as home:
        inv_data = inventory(ready, home / "responder.tar" if many else None)
        inv = home / "inventory.json" if many else None
        if many:
            write_file(inv, json.dumps(inv_data, indent=2) + "\n")
        else:
            inv = write_inventory(ready[0])
        res = _run_playbook(inv, _env(home, min(len(ready), FORKS_MAX)), verbose, timeout, log)
    _judge(ready, res.stdout, res.returncode, out)
    return out


def _run_playbook(inv: Path, env: dict, verbose: bool, timeout: float, log):
    exe = Path(sys.executable).with_name("ansible-playbook")
    return stream([str(exe), "-i", str(inv), str(PLAYBOOK)], show=ansible_show(verbose, log),
                  timeout=timeout, env=env, cwd=PROJECT_ROOT, what="ansible-playbook",
                  check=False)


def _judge(ready: list[Backend], output: str, returncode: int, out: dict) -> None:
    """Each lab's verdict from the output; the responder hash recorded for the good ones."""
    recaps, failures = parse_output(output)
    errors = [l.strip() for l in output.splitlines() if l.startswith("ERROR!")]
    tree_hash = responder_tree_hash()
    for b in ready:
        r = out[b.prefix]
        r.recap = recaps.get(b.prefix, {})
        bad = r.recap.get("failed", 0) or r.recap.get("unreachable", 0)
        if r.recap and not bad and b.prefix not in failures:
            r.ok = True
            b.write_meta(provisioned_hash=tree_hash, provision_recap=r.recap)
            continue
        r.log = b.state.write("ansible.log", output)
        r.error = failures.get(b.prefix) or (errors[-1][:300] if errors else
                                            f"ansible-playbook exited {returncode} with no "
                                            f"recap for this lab")


def provision(backend: Backend, *, verbose: bool = False, timeout: float = 600) -> dict:
    """Run the playbook against one lab VM; return the recap counts (ok, changed, failed...);
    LabError naming the failed task and the log when it fails."""
    if not backend.state.check():
        raise LabError(f"lab '{backend.prefix}' has no state directory {backend.state_dir}: "
                       f"run `invoke up` first")
    r = provision_many([backend], verbose=verbose, timeout=timeout)[backend.prefix]
    if not r.ok:
        raise LabError(f"provisioning failed ({r.error}); full output in {r.log}")
    return r.recap


# --- making labs ------------------------------------------------------------------------------

def _needs_provisioning(backend: Backend, force: bool) -> bool:
    stale = backend.read_meta().get("provisioned_hash") != responder_tree_hash()
    # A backend whose up() just made an already provisioned VM (qemu resuming its snapshot of a
    # guest this playbook provisioned) needs no forced rerun.
    return stale or (force and not getattr(backend, "provisioned_by_up", False))


def _remove_failed(backend: Backend, exc: BaseException) -> BaseException:
    """Remove a fresh lab whose making failed, keeping the playbook's log where it survives the
    state directory; the exception to raise (its text pointing at the kept log)."""
    kept = None
    log = backend.state_dir / "ansible.log"
    if log.exists():
        kept = backend.state.failed_up_log
        write_file(kept, log.read_bytes())
    progress(f"removing what the failed `up` made of lab '{backend.prefix}'")
    try:
        backend.down()
    except LabError as e:
        return LabError(f"{exc}; and removing the lab failed: {e}")
    if kept and isinstance(exc, LabError):
        return LabError(str(exc).replace(str(log), str(kept)))
    return exc


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
        if _needs_provisioning(backend, force):
            recap = provision(backend, verbose=verbose)
        timings["provision_s"] = time.monotonic() - t0
    except BaseException as exc:
        if not fresh:
            raise
        new = _remove_failed(backend, exc)
        if new is exc:
            raise
        raise new from exc
    return {"recap": recap, "timings": timings}


@dataclass
class LabUp:
    """One lab of :func:`bring_up_many`: up and provisioned, or what failed and at which step."""

    prefix: str
    ok: bool = False
    step: str = ""                  # "up" or "provision" when it failed
    error: str = ""
    recap: dict = field(default_factory=dict)
    removed: bool = False           # a fresh lab that failed is removed again


def bring_up_many(backends: list[Backend], *, verbose: bool = False, force: bool = False,
                  workers: int = UP_WORKERS, log=progress) -> dict[str, LabUp]:
    """:func:`bring_up` for many labs: each made (``up``: namespaces, sshd ...; ``workers`` at
    a time), then ONE playbook run over all that need it (:func:`provision_many`).  A lab that
    fails is named with its step and error, a fresh one removed again (its playbook log kept
    as ``<prefix>-failed-up-ansible.log``); the others go on.  The caller holds the labs'
    locks.  Returns {prefix: LabUp} in the order given."""
    if not backends:
        return {}
    trusted_root(create=True)           # made once, before the threads race to make it
    fresh = {b.prefix: not b.exists() for b in backends}
    out = {b.prefix: LabUp(b.prefix) for b in backends}

    def make(b: Backend) -> None:
        try:
            with progress_tag(b.prefix):
                if fresh[b.prefix] or not b.status().get("up"):
                    b.up()
        except Exception as e:          # noqa: BLE001 -- one lab's failure is that lab's
            out[b.prefix].step = "up"
            out[b.prefix].error = str(e) if isinstance(e, LabError) \
                else f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(backends)))) as pool:
        list(pool.map(make, backends))
    made = [b for b in backends if not out[b.prefix].step]
    todo = [b for b in made if _needs_provisioning(b, force)]
    results = provision_many(todo, verbose=verbose, log=log) if todo else {}
    for b in made:
        r = results.get(b.prefix)
        if r is None or r.ok:
            out[b.prefix].ok, out[b.prefix].recap = True, (r.recap if r else {})
        else:
            out[b.prefix].step = "provision"
            out[b.prefix].error = f"{r.error}; full output in {r.log}"
    for b in backends:
        u = out[b.prefix]
        if not u.ok and fresh[b.prefix]:
            with progress_tag(b.prefix):
                u.error = str(_remove_failed(b, LabError(u.error)))
            u.removed = True
    return out
