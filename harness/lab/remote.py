"""The remote backend: labs on *lab hosts*, other Linux machines reached over SSH and named in
an Ansible inventory (``invoke up --hosts INVENTORY``); each lab is the netns lab, built on its
lab host, and driven from here.

    this machine (controller)             lab host H (a host of INVENTORY)
    invoke, Ansible, paramiko, dissection P-host: vboxnet0 ──veth── eth1 :P-vm
    runs/<run>/ (pcapng, logs)  ──SSH──>  dumpcap, nc, clients     sshd, RST rule, responder

**Ansible is the fleet engine.**  :func:`up_on_hosts` runs ``provision/labhost.yml`` once over
an inventory of every lab host (their variables as ``ansible-inventory`` resolves them:
:mod:`harness.lab.labhosts`) and of every lab VM.  On all lab hosts at once (forks), the role
``tcplab_labhost`` checks root and the tools, ships tcplab's code and makes the labs with
:mod:`harness.lab.onhost` (the netns backend: the same code as on this machine); then the
one playbook ``site.yml`` provisions each lab VM whose lab host made it.  A lab host that is
unreachable, lacks root or fails is named with what to fix, and the others go on.
:func:`down_on_hosts` removes labs the same way (``labhost_down.yml``).

**A run drives a lab through three seams of** :class:`~harness.lab.base.Backend`:

* ``ssh_endpoint()``: the lab VM's sshd, for paramiko and Ansible, through a ProxyCommand that
  runs ``nc`` in the lab's host namespace on the lab host (``ssh -F <state>/labhost.ssh_config
  ADDRESS ip netns exec P-host nc %h %p``);
* ``host_argv(argv)``: a host-side command (dumpcap streaming pcapng to stdout, the canary's nc,
  the nc client) as ``ssh ... 'python3 onhost.py exec -- ip netns exec P-host ARGV'``.  Its
  output comes back over SSH into the local run folder; stopping (or killing) the local ssh
  ends the remote command too (``onhost exec``);
* ``host_python_argv(module, args)``: the python and Scapy clients, from the lab host's copy of
  the harness.

Each lab's *drive connection* has its own ssh_config (the lab host's inventory variables,
:meth:`LabHost.ssh_config`) and one SSH master connection, started in a session of its own: a
run's commands open channels on it (~0.1 s) instead of connections, and stopping a capture
(its process group) never stops the master or a ProxyCommand of the lab host's own.  The
master ends after 5 idle minutes, or with the lab (``down`` kills every process naming the
lab's state directory).

The lab's keys are made here, as the qemu backend does: the client key stays here; the lab
sshd's host key pair goes to the lab host (in a 0600 file the role removes once the lab is
made), so known_hosts is strict from the first connection.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.lab.base import ANSIBLE_DIRS, Backend, SshEndpoint, responder_tree_hash, tree_hash
from harness.lab.firewall import on_host_side, tagged_rules
from harness.lab.keys import ensure_keypair, write_known_hosts
from harness.lab.labhosts import HostOutcome, LabHost, host_problem, parse_play, read_inventory
from harness.lab.net import Namespace
from harness.lab.netns import SSHD, inventory_vars_in, responder_dir_in
from harness.lab.netns import TOOLS as NETNS_TOOLS
from harness.lab.provision import ansible_env, ansible_show, inventory_hostvars
from harness.lab.state import LabState, trusted_root, validate_prefix
from harness.util import (PROJECT_ROOT, LabError, kill_pids, pids_mentioning, progress,
                          require_root, run, stream)

#: On every lab host: the labs' state root and tcplab's code (both root's, 0700, on tmpfs).
LABHOST_STATE_ROOT = "/run/tcplab"
LABHOST_CODE_DIR = "/run/tcplab-labhost"
HOSTSIDE = "harness/lab/onhost.py"
#: What a lab host runs: the netns backend's tools and sshd, dumpcap, and what the drive uses.
LABHOST_TOOLS = (*NETNS_TOOLS, SSHD, "dumpcap", "timeout", "bash", "env")
TOOLS = ("ssh", "ssh-keygen")
#: What a lab host gets of tcplab (packed by the responder role's pack.py).
CODE_TREES = ("harness", "responder")
PACK = PROJECT_ROOT / "provision" / "roles" / "tcplab_responder" / "files" / "pack.py"
PLAYBOOK_UP = PROJECT_ROOT / "provision" / "labhost.yml"
PLAYBOOK_DOWN = PROJECT_ROOT / "provision" / "labhost_down.yml"
MASTER_PERSIST_S = 300
FLEET_TIMEOUT_S = 1800


@dataclass
class RemoteBackend(Backend):
    name: str = "remote"
    #: the lab host (from the inventory for a new lab; from the lab's record afterwards)
    labhost: LabHost | None = None
    inventory: str = ""

    def __post_init__(self):
        super().__post_init__()
        meta = self.read_meta()
        if self.labhost is None and meta.get("labhost"):
            self.labhost = LabHost.from_record(meta["labhost"])
        self.inventory = self.inventory or meta.get("inventory", "")
        #: the lab's host namespace, on the lab host (not on this machine)
        self.lab_namespace = Namespace(f"{self.prefix}-host")
        self._master_lock = threading.Lock()
        self._master_ok = False

    def _host(self) -> LabHost:
        if self.labhost is None:
            raise LabError(f"lab '{self.prefix}' has no lab host on record: make remote labs "
                           f"with `invoke up --hosts INVENTORY`")
        return self.labhost

    # --- where things are on the lab host ---------------------------------------------------
    @property
    def remote_state_dir(self) -> str:
        return str(PurePosixPath(LABHOST_STATE_ROOT) / self.prefix)

    def responder_dir(self) -> str:
        return responder_dir_in(self.remote_state_dir)

    def inventory_vars(self) -> dict:
        return inventory_vars_in(self.remote_state_dir)

    # --- the drive connection ---------------------------------------------------------------
    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "labhost.ssh_config"

    def _ssh(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), self._host().address]

    def host_exec_prefix(self) -> list[str]:
        raise LabError(f"lab '{self.prefix}' is on lab host {self._host().name}: this command "
                       f"runs host-side commands on this machine and does not drive remote "
                       f"labs (a run does, through Backend.host_argv)")

    def host_argv(self, argv: list[str]) -> list[str]:
        self._ensure_master()
        return self.drive_argv(argv)

    def drive_argv(self, argv: list[str]) -> list[str]:
        """``ssh ... ADDRESS 'onhost.py exec -- ip netns exec P-host ARGV'``: one quoted
        command string, since ssh hands its command to the remote user's shell."""
        return self._ssh() + [shlex.join(self._tied(argv))]

    def _tied(self, argv: list[str]) -> list[str]:
        """``argv`` in the lab's host namespace on the lab host, ended with its SSH session."""
        h = self._host()
        return [*h.sudo(), h.python, "-I", "-S", f"{LABHOST_CODE_DIR}/{HOSTSIDE}", "exec", "--",
                *self.lab_namespace.exec_prefix(), *argv]

    def host_python_argv(self, module: str, args) -> list[str]:
        h = self._host()
        return self.host_argv(["env", f"PYTHONPATH={LABHOST_CODE_DIR}", h.python, "-m", module,
                               *args])

    @property
    def host_side_isolated(self) -> bool:
        return True

    def _host_rules(self, namespaces_present) -> list[str] | None:
        """The lab's tagged rules in its host namespace on the lab host, asked over the drive
        connection (None: the lab host could not be asked; ``[]``: no lab there)."""
        if self.labhost is None or not self.state.has_record():
            return []
        try:
            return tagged_rules(self.prefix, on_host_side(self))
        except (LabError, subprocess.TimeoutExpired):
            return None

    def ssh_endpoint(self) -> SshEndpoint:
        # nc tied to its session too: a client that goes without a word (paramiko closing,
        # Ansible's master ended) would otherwise leave nc and the VM's sshd session open.
        proxy = self._ssh() + self._tied(["nc", "%h", "%p"])
        return SshEndpoint(host=self.vm_ip, port=22, user="root",
                           key_file=self.state_dir / "id_ed25519",
                           known_hosts=self.state_dir / "known_hosts",
                           proxy_command=" ".join(proxy))

    def _ensure_master(self) -> None:
        """The lab's SSH master connection to its lab host, started once in a session of its
        own (so a capture's process group never holds it)."""
        with self._master_lock:
            if self._master_ok:
                return
            ssh = self._ssh()
            check = subprocess.run(ssh[:3] + ["-O", "check", ssh[3]], capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=15)
            if check.returncode != 0:
                with self.state.open_log("labhost-ssh.log") as log:
                    res = subprocess.run(ssh[:3] + ["-o", "ControlMaster=yes", "-o",
                                                    f"ControlPersist={MASTER_PERSIST_S}", "-f",
                                                    "-N", ssh[3]],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, start_new_session=True, timeout=90)
                if res.returncode != 0:
                    err = (self.state_dir / "labhost-ssh.log").read_text(errors="replace")
                    tail = (err.strip().splitlines() or [f"exit {res.returncode}"])[-1]
                    raise LabError(f"lab '{self.prefix}': cannot reach lab host "
                                   f"{self._host().name} over SSH ({tail}); is it up? "
                                   f"`invoke status --prefix {self.prefix}`")
            self._master_ok = True

    # --- the interface ----------------------------------------------------------------------
    def up(self) -> None:
        """Make (or complete) this lab on its lab host and provision it: one fleet run."""
        res = FleetResult()
        _fleet_up([(self._host(), [self])], self.inventory, res)
        if not res.labs.get(self.prefix, {}).get("ok"):
            raise LabError(res.labs.get(self.prefix, {}).get("error") or "no result")

    def down(self) -> None:
        """Remove the lab from its lab host, then everything of it here.  When the lab host
        cannot be reached, the lab's record stays (so a later ``down`` can finish) and the
        error says so."""
        require_root("invoke down")
        if self.labhost is not None and self.state.has_record():
            res = FleetResult()
            _fleet_down([(self.labhost, [self])], self.inventory, res, remove_all=False)
            if self.prefix not in res.removed:
                raise LabError(res.labs.get(self.prefix, {}).get("error") or
                               f"lab '{self.prefix}' was not removed from its lab host")
        self._teardown()

    def status(self) -> dict:
        st = self._status_base()
        h = self.labhost
        st.update({"labhost": h.name if h else None, "inventory": self.inventory or None})
        if st["record"] and h is not None:
            try:
                st["address"] = h.address
                st["ssh"] = self.ssh_answers(timeout=3)
                st["interface"] = f"{self.capture_interface} on {h.name}" if st["ssh"] else None
            except (LabError, subprocess.TimeoutExpired) as e:
                st["error"] = str(e)
        # The lab host runs its copy of tcplab's code (clients, onhost): when the code here
        # has changed since, the lab is not up until `up` ships it again (bring_up does).
        st["code_current"] = self.read_meta().get("code_hash") == tree_hash(*CODE_TREES)
        st["up"] = bool(st["record"] and st["ssh"] and st["code_current"])
        return st

    # --- making the lab's local part ----------------------------------------------------------
    def _prepare_local(self) -> dict:
        """The lab's directory and record here, its keys and its drive ssh_config; returns
        the keys its lab host needs."""
        h = self._host()
        h.check()
        self._begin_up(*ANSIBLE_DIRS, tools=TOOLS, labhost=h.record(), inventory=self.inventory,
                       labhost_state_dir=self.remote_state_dir)
        sd = self.state_dir
        client_pub = ensure_keypair(sd / "id_ed25519", f"tcplab-{self.prefix}")
        host_pub = ensure_keypair(sd / "ssh_host_ed25519_key", f"tcplab-{self.prefix}-host")
        write_known_hosts(sd / "known_hosts", self.vm_ip, host_pub)
        self.state.write("labhost.ssh_config",
                         h.ssh_config(sd / "labhost.sock", self.inventory or "the inventory"))
        self._master_ok = False
        return {"authorized_key": client_pub, "host_key_pub": host_pub,
                "host_key": (sd / "ssh_host_ed25519_key").read_text()}


# =============================================================================== the fleet

@dataclass
class FleetResult:
    """What a fleet run did: each lab host's problem (None: fine), each lab's outcome."""

    hosts: dict = field(default_factory=dict)       # host name -> None | one line
    labs: dict = field(default_factory=dict)        # prefix -> {host, ok, error}
    removed: list = field(default_factory=list)     # prefixes removed (down)

    @property
    def ok(self) -> bool:
        return not any(self.hosts.values()) and all(v["ok"] for v in self.labs.values())

    def problems(self) -> list[str]:
        out = [p for p in self.hosts.values() if p]
        bad_hosts = {h for h, p in self.hosts.items() if p}
        out += [f"lab '{p}' on {v['host']}: {v['error']}" for p, v in self.labs.items()
                if not v["ok"] and v["host"] not in bad_hosts]
        return out


def _next_free(base: str, taken: set) -> str:
    for i in range(1, 10_000):
        p = f"{base}{i}"
        if p not in taken and not LabState(validate_prefix(p)).dir.exists():
            return p
    raise LabError(f"no free lab name {base}N")


def remote_labs() -> dict[str, list[str]]:
    """This machine's remote labs by lab host name (from their records)."""
    from harness.lab.labs import find_labs
    out: dict[str, list[str]] = {}
    for f in find_labs():
        if f.backend == "remote":
            rec = LabState(f.prefix).read_meta().get("labhost") or {}
            out.setdefault(rec.get("name", "?"), []).append(f.prefix)
    return out


def _read(inventory: str) -> list[LabHost]:
    with fleet_dir() as fleet:
        return read_inventory(inventory, home=fleet / "ansible" / "home")


def up_on_hosts(inventory: str | Path, labs: int = 1, base: str = "tcplab", *,
                verbose: bool = False) -> FleetResult:
    """``invoke up --hosts INVENTORY --labs N``: N labs on every lab host of the inventory
    (its labs already there count), made and provisioned by one Ansible run; each lab host
    on its own (a bad one is named in the result, the others go on)."""
    require_root("invoke up --hosts")
    if labs < 1:
        raise LabError(f"--labs {labs}: give 1 or more labs per lab host")
    if len(base) > 9 or not base.isalnum() or not base[0].isalpha():
        raise LabError(f"--prefix {base!r} for remote labs: 1-9 lowercase letters and digits "
                       f"(labs are named PREFIX1, PREFIX2, ...)")
    from harness.lab.labs import find_labs
    taken = {f.prefix for f in find_labs()}

    def labs_of(h: LabHost, existing: list[str], hosts: set) -> list[str]:
        taken.update(hosts)                  # a lab is never named like a lab host
        prefixes = list(existing)
        while len(prefixes) < labs:
            prefixes.append(_next_free(base, taken))
            taken.add(prefixes[-1])
        return prefixes
    res = FleetResult()
    with contextlib.ExitStack() as locks:
        inventory, plan = _plan(inventory, labs_of, locks, res, new=True)
        _fleet_up(plan, inventory, res, verbose=verbose)
    return res


def down_on_hosts(inventory: str | Path, *, verbose: bool = False) -> FleetResult:
    """``invoke down --all --hosts INVENTORY``: every lab on every lab host of the inventory
    (also those this machine has no record of), tcplab's code there and, here, the records of
    the labs removed.  A lab host where one of this machine's labs is busy is left alone."""
    require_root("invoke down --all --hosts")
    res = FleetResult()
    with contextlib.ExitStack() as locks:
        inventory, plan = _plan(inventory, lambda h, existing, _: existing, locks, res,
                                new=False)
        _fleet_down(plan, inventory, res, remove_all=True, verbose=verbose)
    return res


def _plan(inventory, labs_of, locks: contextlib.ExitStack, res: FleetResult, *,
          new: bool) -> tuple[str, list]:
    """The inventory's lab hosts, each checked (a bad one goes into ``res``) with its labs
    (``labs_of(host, its labs here, every host's name)``), each lab locked in ``locks``:
    [(host, [backends])].  ``new``: the labs take the host from the inventory (else from their
    records).  A busy lab is left out of an up, and leaves its whole host out of a down."""
    inventory = str(Path(inventory).expanduser().resolve())
    hosts = _read(inventory)
    names = {h.name for h in hosts}
    existing = remote_labs()
    plan = []
    for h in hosts:
        try:
            h.check()
        except LabError as e:
            res.hosts[h.name] = str(e)
            continue
        backends, busy = [], None
        for p in labs_of(h, existing.get(h.name, []), names):
            b = RemoteBackend(prefix=p, labhost=h if new else None, inventory=inventory)
            try:
                locks.enter_context(b.locked())
            except LabError as e:
                res.labs[p] = {"host": h.name, "ok": False, "error": str(e)}
                busy = e
                if not new:
                    break
                continue
            backends.append(b)
        if busy is not None and not new:
            res.hosts[h.name] = f"lab host {h.name}: not cleaned ({busy})"
        else:
            plan.append((h, backends))
    return inventory, plan


# --------------------------------------------------------------------------- one fleet run

def _fleet_up(plan: list, inventory: str, res: FleetResult, *, verbose: bool = False) -> None:
    """Make and provision ``plan`` ([(lab host, [RemoteBackend])]); the caller holds the labs'
    locks.  Fresh labs that fail are removed again (here, and on their lab host)."""
    fresh = {b.prefix: not b.exists() for _, bs in plan for b in bs}
    code_hash = tree_hash(*CODE_TREES)           # what the lab hosts get (packed in _run)
    groups = []
    for h, bs in plan:
        keys, ready = {}, []
        for b in bs:
            try:
                keys[b.prefix] = b._prepare_local()
                ready.append(b)
            except LabError as e:
                res.labs[b.prefix] = {"host": h.name, "ok": False, "error": str(e)}
                if fresh[b.prefix]:
                    b._teardown()
        if ready:
            groups.append((h, ready, {"tcplab_labhost_action": "up", "tcplab_labhost_labs": keys}))
    if not groups:
        return
    try:
        outcomes, reports = _run(PLAYBOOK_UP, groups, inventory, verbose=verbose)
    except BaseException:
        for _, bs, _ in groups:
            for b in bs:
                if fresh[b.prefix]:
                    b._teardown()       # its lab host may hold it: `down --all --hosts` finds it
        raise
    cleanup = []
    for h, bs, _ in groups:
        o = outcomes.get(h.name, HostOutcome())
        report = reports.get(h.name)
        problem = None
        if not o.ok or report is None:
            problem = host_problem(h, o, inventory) if not o.ok else \
                f"lab host {h.name}: no report from tcplab on it"
        res.hosts[h.name] = problem
        for b in bs:
            err = problem or _lab_problem(b, h, report, outcomes.get(b.prefix))
            res.labs[b.prefix] = {"host": h.name, "ok": err is None, "error": err}
            if err is None:
                vm = outcomes.get(b.prefix, HostOutcome())
                b.write_meta(provisioned_hash=responder_tree_hash(), provision_recap=vm.counts,
                             code_hash=code_hash)
            elif fresh.get(b.prefix):
                cleanup.append((h, b, not (o.unreachable or o.counts.get("unreachable"))))
    _remove_failed(cleanup, inventory)


def _lab_problem(b: RemoteBackend, h: LabHost, report: dict, vm: HostOutcome | None) -> str | None:
    r = (report.get("labs") or {}).get(b.prefix) or {}
    if not r.get("ok"):
        return r.get("error") or f"lab host {h.name} did not make it"
    if r.get("state_dir") != b.remote_state_dir:
        return (f"lab host {h.name} made it in {r.get('state_dir')}, not "
                f"{b.remote_state_dir}: is TCPLAB_STATE_ROOT set there?")
    if vm is None or not vm.ok:
        why = f"{vm.task}: {vm.message}" if vm and vm.task else "it did not run"
        return f"provisioning lab '{b.prefix}' on {h.name} failed ({why})"
    return None


def _remove_failed(cleanup: list, inventory: str) -> None:
    """Remove fresh labs whose making failed: on their lab host (when it answered), then
    here."""
    if not cleanup:
        return
    progress(f"removing what the failed `up` made of {', '.join(b.prefix for _, b, _ in cleanup)}")
    by_host: dict = {}
    for h, b, reachable in cleanup:
        if reachable:
            by_host.setdefault(h.name, (h, []))[1].append(b)
    if by_host:
        _fleet_down(list(by_host.values()), inventory, FleetResult(), remove_all=False)
    for _, b, _ in cleanup:
        b._teardown()


def _fleet_down(plan: list, inventory: str, res: FleetResult, *, remove_all: bool,
                verbose: bool = False) -> None:
    """Remove ``plan``'s labs ([(lab host, [RemoteBackend])]; ``remove_all``: every lab on each
    host) from their lab hosts, then, for each lab host that did so, the labs' local parts."""
    groups = [(h, bs, {"tcplab_labhost_action": "down", "tcplab_labhost_remove_all": remove_all,
                       "tcplab_labhost_remove": [b.prefix for b in bs]})
              for h, bs in plan if bs or remove_all]
    if not groups:
        return
    outcomes, reports = _run(PLAYBOOK_DOWN, groups, inventory, verbose=verbose)
    for h, bs, _ in groups:
        o = outcomes.get(h.name, HostOutcome())
        report = reports.get(h.name)
        problem = None if o.ok and report is not None else \
            (host_problem(h, o, inventory) if not o.ok else f"lab host {h.name}: no report")
        res.hosts[h.name] = problem
        failed = (report or {}).get("failed") or {}
        for b in bs:
            err = problem or failed.get(b.prefix)
            if err is None and b.prefix in (report or {}).get("busy", []):
                err = f"lab '{b.prefix}' is busy on {h.name}"
            res.labs[b.prefix] = {"host": h.name, "ok": err is None, "error": err}
            if err is None:
                b._teardown()
                res.removed.append(b.prefix)
        res.removed += [p for p in (report or {}).get("removed", []) if p not in res.removed]


def _run(playbook: Path, groups: list, inventory: str, *, verbose: bool = False,
         timeout: float = FLEET_TIMEOUT_S) -> tuple[dict, dict]:
    """One ``ansible-playbook`` run of ``playbook`` over ``groups`` ([(lab host, [labs],
    variables)]): each host's outcome and report.  Ansible's home, temp files, control sockets
    and the inventory live in a fresh 0700 directory in the state root, removed afterwards."""
    with fleet_dir() as fleet:
        inv = _inventory(fleet, groups)
        _pack_code(fleet / "code")
        (fleet / "inventory.json").write_text(json.dumps(inv, indent=2) + "\n")
        exe = Path(sys.executable).with_name("ansible-playbook")
        env = ansible_env(fleet)
        kids = inv["all"]["children"]
        env["ANSIBLE_FORKS"] = str(min(50, max(5, sum(len(g["hosts"]) for g in kids.values()))))
        names = ", ".join(h.name for h, _, _ in groups)
        progress(f"Ansible on lab host(s) {names}: {playbook.relative_to(PROJECT_ROOT)}")
        out = stream([str(exe), "-i", str(fleet / "inventory.json"), str(playbook)],
                     show=ansible_show(verbose), env=env, cwd=PROJECT_ROOT,
                     what="ansible-playbook", check=False, timeout=timeout).stdout
        outcomes = parse_play(out)
        reports = {}
        for i, (h, _, _) in enumerate(groups):
            try:
                reports[h.name] = json.loads((fleet / "reports" / f"{i}.json").read_text())
            except (OSError, ValueError):
                pass
        return outcomes, reports


def _pack_code(where: Path) -> Path:
    """harness/ and responder/ in one deterministic archive ``where/tcplab.tar`` (the
    responder role's pack.py over a copy without caches), for the lab hosts."""
    stage = where / "stage"
    for tree in CODE_TREES:
        shutil.copytree(PROJECT_ROOT / tree, stage / tree,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    archive = where / "tcplab.tar"
    run([sys.executable, str(PACK), str(stage), str(archive)], what="packing tcplab's code")
    shutil.rmtree(stage)
    return archive


@contextlib.contextmanager
def fleet_dir():
    """A fresh 0700 directory in the state root for one Ansible run over many hosts (its home,
    temp files, control sockets, inventory, reports); its processes killed and it removed
    afterwards."""
    root = trusted_root(create=True)
    fleet = Path(tempfile.mkdtemp(prefix="fleet-", dir=root))
    try:
        for d in (*ANSIBLE_DIRS, "reports", "code"):
            (fleet / d).mkdir(parents=True, mode=0o700, exist_ok=True)
        yield fleet
    finally:
        # Ansible's SSH masters: SIGTERM first, so each ends its ProxyCommand (SIGKILL would
        # orphan it, with its connection to the lab host), then SIGKILL what is left.
        left = kill_pids(pids_mentioning(str(fleet) + "/"), signal.SIGTERM, wait=5)
        kill_pids(left, signal.SIGKILL, wait=5)
        shutil.rmtree(fleet, ignore_errors=True)


def _inventory(fleet: Path, groups: list) -> dict:
    """The run's inventory: the lab hosts (their own variables, and the role's) and the lab
    VMs of an up (``site.yml``'s variables of each lab, through its lab host)."""
    hosts, vms = {}, {}
    for i, (h, bs, extra) in enumerate(groups):
        v = h.connection_vars()
        v.update(extra)
        v.update(tcplab_labhost_report=str(fleet / "reports" / f"{i}.json"),
                 tcplab_labhost_archive=str(fleet / "code" / "tcplab.tar"),
                 tcplab_labhost_code_dir=LABHOST_CODE_DIR,
                 tcplab_labhost_state_root=LABHOST_STATE_ROOT,
                 tcplab_labhost_python=h.python, tcplab_labhost_tools=list(LABHOST_TOOLS))
        hosts[h.name] = v
        if extra.get("tcplab_labhost_action") != "up":
            continue
        for b in bs:
            vm = inventory_hostvars(b)
            vm.update(tcplab_labhost_name=h.name, ansible_become=False,
                      tcplab_responder_archive=str(fleet / "code" / "responder-vm.tar"))
            vms[b.prefix] = vm
    clash = set(hosts) & set(vms)
    if clash:
        raise LabError(f"lab name(s) {', '.join(sorted(clash))} are also hosts of the inventory")
    return {"all": {"children": {"tcplab_labhost": {"hosts": hosts},
                                 "tcplab_remote_vm": {"hosts": vms}}}}
