"""A pool of labs: lease one, use it, give it back clean.

``invoke lessons --labs N`` and ``invoke grade DIR --jobs N`` run many demos at once, each on a
lab of its own.  :class:`LabPool` holds the labs (made up front with one playbook run, or on
demand, up to ``size``), hands one to each caller (:meth:`LabPool.lease`, thread-safe; it waits
while all are busy), takes it back (:meth:`LabPool.release`) only once it is clean, and at the
end removes the labs it made (not those that existed before, and none with ``keep``)::

    with LabPool(4) as pool:
        with pool.leased() as lab:          # a Backend, up and provisioned, and clean
            run_demo(lab, "hello")

The pool holds every lab's lock while it lives, so no other tcplab command (``invoke demo``,
``invoke down --all``) can use or remove a lab under it.

**Clean** (what :class:`LabCleaner` checks at each release, and restores):

* *processes*: nothing runs in the lab's namespaces but its sshd (no responder, no client, no
  capture, no SSH session left open); for a VM that is not a namespace here, no process runs
  from the lab's responder directory or as ``-m responder``.  Left-overs get SIGTERM, then
  SIGKILL;
* *iptables*: every table of the VM (and of the host namespace) is exactly what it was when
  the pool took the lab -- the lab's RST rule in place, no condition's or peer's rule left --
  compared as ``iptables-save`` output without counters; a difference is undone with
  ``iptables-restore`` of that first state (tables that were empty then are flushed);
* *traffic control*: no ``netem`` qdisc left on any interface of the VM.

What was found is reported (:class:`Cleaning`); a lab that is still not clean after that is
refused: taken out of the pool (and removed, if the pool made it), and on-demand pools may make
another in its place.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

from harness.lab.base import Backend
from harness.util import LabError, cmdline, kill_pids, pid_alive, progress

#: Where a pool's own labs get their names: ``pool`` + 4 random hex digits + the lab's number.
DEFAULT_TAG = "pool"


# --- what "clean" means -----------------------------------------------------------------------

@dataclass
class Cleaning:
    """One release: what was found in the lab, and whether it is clean now."""

    prefix: str
    processes: list = field(default_factory=list)     # "PID command" killed
    rules: list = field(default_factory=list)         # iptables lines that differed
    qdiscs: list = field(default_factory=list)        # netem qdiscs deleted
    left: list = field(default_factory=list)          # what could not be cleaned
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.left

    @property
    def found(self) -> bool:
        return bool(self.processes or self.rules or self.qdiscs)

    def summary(self) -> str:
        parts = []
        if self.processes:
            parts.append(f"killed {len(self.processes)} process(es): "
                         + "; ".join(p[:80] for p in self.processes))
        if self.rules:
            parts.append(f"restored iptables ({len(self.rules)} line(s) differed: "
                         + "; ".join(self.rules[:4]) + (" ..." if len(self.rules) > 4 else "")
                         + ")")
        if self.qdiscs:
            parts.append("deleted " + "; ".join(self.qdiscs))
        if self.left:
            parts.append("NOT CLEAN: " + "; ".join(self.left))
        return f"lab '{self.prefix}': " + (", ".join(parts) if parts else "clean")


COUNTERS_RE = re.compile(r"\s*\[\d+:\d+\]$")
BUILTIN_RE = re.compile(r"^:(\S+) (?!-)\S+")       # ":INPUT ACCEPT": a built-in chain


def normalise_save(text: str) -> dict:
    """``iptables-save`` output as {table: [lines]}: comments and packet counters dropped, and
    a built-in chain's ACCEPT policy (the default) too, so a table that was only looked at
    (loaded, nothing in it) equals one never loaded; empty tables are left out."""
    tables: dict = {}
    current = None
    for line in text.splitlines():
        line = COUNTERS_RE.sub("", line.rstrip())
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif current is not None and line != "COMMIT" and not (
                BUILTIN_RE.match(line) and line.endswith(" ACCEPT")):
            current.append(line)
    return {t: lines for t, lines in tables.items() if lines}


def restore_text(saved: str, now: str) -> str:
    """What ``iptables-restore`` needs to bring ``now`` back to ``saved``: the saved tables,
    and every other table of ``now`` emptied with its built-in chains' policies at ACCEPT
    (iptables-restore flushes each table it is given)."""
    out = saved if saved.endswith("\n") or not saved else saved + "\n"
    had = {line[1:].strip() for line in saved.splitlines() if line.startswith("*")}
    table = None
    extra: dict = {}
    for line in now.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table and table not in had:
            m = BUILTIN_RE.match(line)
            chains = extra.setdefault(table, [])
            if m:
                chains.append(m.group(1))
    for t, chains in extra.items():
        out += f"*{t}\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in chains) + "COMMIT\n"
    return out


def differences(before: dict, after: dict) -> list[str]:
    """Lines of ``after`` not in ``before`` (``+``) and the reverse (``-``), per table."""
    out = []
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table, []), after.get(table, [])
        out += [f"+{table}: {line}" for line in a if line not in b]
        out += [f"-{table}: {line}" for line in b if line not in a]
    return out


class _Place:
    """Somewhere a lab runs commands: a namespace here, or the VM over SSH."""

    def __init__(self, backend: Backend, where: str):
        self.backend, self.where = backend, where
        self._ssh = None

    def sh(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """Run ``command`` (a shell line); (status, stdout)."""
        prefix = self._prefix()
        if prefix is not None:
            try:
                r = subprocess.run(prefix + ["sh", "-c", command], capture_output=True,
                                   text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return 124, ""
            return r.returncode, r.stdout
        from harness.run.ssh import LabSSH
        if self._ssh is None:
            self._ssh = LabSSH(self.backend.ssh_endpoint())
        r = self._ssh.run(command, check=False, timeout=timeout)
        return r.status, r.stdout

    def _prefix(self) -> list | None:
        if self.where == "host":
            return self.backend.host_exec_prefix() if self.backend.host_namespace else None
        vm = getattr(self.backend, "vm_exec_prefix", None)
        return vm() if vm is not None else None

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None


class LabCleaner:
    """The clean state of one lab, taken when the pool gets it, and the check/restore."""

    def __init__(self, backend: Backend):
        self.b = backend
        self.vm = _Place(backend, "vm")
        self.host = _Place(backend, "host") if backend.host_namespace else None
        self.saved: dict = {}

    def places(self) -> list:
        return [p for p in (self.vm, self.host) if p is not None]

    def take_baseline(self) -> None:
        """Record each place's iptables as the clean state; the VM's must hold the RST rule."""
        from harness.lab.firewall import rst_rule
        for place in self.places():
            status, text = place.sh("iptables-save")
            if status != 0:
                raise LabError(f"lab '{self.b.prefix}': iptables-save failed in its {place.where}")
            self.saved[place.where] = text
        if self.vm.sh(f"iptables -w 10 -C {rst_rule()}")[0] != 0:
            raise LabError(f"lab '{self.b.prefix}' has no RST rule in its VM: provision it "
                           f"(`invoke up --prefix {self.b.prefix}`)")

    # --- processes ------------------------------------------------------------------------
    def stray_pids(self) -> dict[int, str]:
        """Live processes in the lab that are not its sshd: {pid: command line}."""
        ns = [x.name for x in self.b.namespaces()]
        if not ns:
            return {}
        from harness.lab import net
        keep = {self.b.state.live_pid("sshd.pid")}
        return {p: cmdline(p) for p in net.ns_pids(*ns) if p not in keep and pid_alive(p)}

    def _vm_over_ssh_strays(self) -> list[str]:
        """A VM that is not a namespace here: its processes started from the responder's
        directory or as ``-m responder`` (the ``ps`` lines)."""
        if self.vm._prefix() is not None:
            return []
        status, out = self.vm.sh("ps -eo pid=,args=")
        mine = self.b.responder_dir()
        return [line.strip() for line in out.splitlines() if status == 0 and
                ("-m responder" in line or mine in line) and "ps -eo" not in line]

    def _kill(self, c: Cleaning) -> None:
        strays = self.stray_pids()
        c.processes += [f"{p} {cmd or '?'}" for p, cmd in sorted(strays.items())]
        left = kill_pids(strays, signal.SIGTERM, wait=2)
        left = kill_pids(left, signal.SIGKILL, wait=3)
        c.left += [f"process {p} survived SIGKILL" for p in left if pid_alive(p)]
        remote = self._vm_over_ssh_strays()
        if remote:
            c.processes += remote
            pids = " ".join(line.split()[0] for line in remote)
            self.vm.sh(f"kill -TERM {pids}; sleep 1; kill -KILL {pids} 2>/dev/null; true")
            c.left += [f"VM process still there: {p}" for p in self._vm_over_ssh_strays()]

    # --- iptables and tc ------------------------------------------------------------------
    def _rules(self, c: Cleaning) -> None:
        for place in self.places():
            status, now = place.sh("iptables-save")
            before = normalise_save(self.saved[place.where])
            diff = differences(before, normalise_save(now)) if status == 0 else ["unreadable"]
            if not diff:
                continue
            c.rules += [f"{place.where} {d}" for d in diff]
            text = restore_text(self.saved[place.where], now)
            place.sh(f"iptables-restore <<'TCPLAB_EOF'\n{text}TCPLAB_EOF\n")
            status, again = place.sh("iptables-save")
            if status != 0 or differences(before, normalise_save(again)):
                c.left.append(f"iptables in the {place.where} could not be restored")

    def _qdiscs(self, c: Cleaning) -> None:
        status, out = self.vm.sh("tc qdisc show")
        for line in out.splitlines() if status == 0 else ():
            m = re.search(r"\bnetem\b.*\bdev (\S+)", line)
            if m:
                c.qdiscs.append(f"netem on {m.group(1)}")
                self.vm.sh(f"tc qdisc del dev {shlex.quote(m.group(1))} root")
        status, out = self.vm.sh("tc qdisc show")
        if status == 0 and "netem" in out:
            c.left.append("a netem qdisc could not be deleted")

    def clean(self) -> Cleaning:
        """Check the lab against its clean state and restore it; what was found."""
        t0 = time.monotonic()
        c = Cleaning(self.b.prefix)
        self._kill(c)
        self._rules(c)
        self._qdiscs(c)
        if not self.b.ssh_answers():
            c.left.append("its sshd does not answer")
        c.seconds = time.monotonic() - t0
        return c

    def close(self) -> None:
        for place in self.places():
            place.close()


# --- the pool ---------------------------------------------------------------------------------

class LabPool:
    """Up to ``size`` labs of ``backend``, leased one at a time per caller (thread-safe).

    ``prefixes``: the labs' names (default ``pool<4 hex><n>``); labs that exist are used as
    they are (brought up and provisioned if needed) and kept at the end; labs the pool makes
    are removed by :meth:`close` unless ``keep``.  ``up_front`` makes every lab in
    :meth:`open` with one playbook run (labs that fail are named and left out; none at all is
    an error); otherwise a lab is made when a lease finds none free."""

    def __init__(self, size: int, *, backend: str = "netns", prefixes: list | None = None,
                 tag: str = DEFAULT_TAG, keep: bool = False, up_front: bool = True,
                 verbose: bool = False, log=progress):
        if not isinstance(size, int) or size < 1:
            raise LabError(f"a pool needs 1 lab or more, not {size!r}")
        if prefixes is not None and len(prefixes) < size:
            raise LabError(f"a pool of {size} labs needs {size} names, got {len(prefixes)}")
        self.size, self.backend_name, self.keep = size, backend, keep
        self.up_front, self.verbose, self.log = up_front, verbose, log
        if not prefixes:
            from harness.lab.labs import lab_prefixes
            prefixes = lab_prefixes(f"{tag}{uuid.uuid4().hex[:4]}", size)
        self.prefixes = list(prefixes)[:size]
        self._cond = threading.Condition()
        self._stack = contextlib.ExitStack()
        self._labs: dict = {}            # prefix -> Backend, every lab the pool holds
        self._cleaners: dict = {}
        self._made: set = set()          # labs this pool made (removed at the end)
        self._free: list = []
        self._leased: set = set()
        self._pending = 0
        self._next = 0                   # next name for an on-demand lab
        self._closed = False
        self.failures: dict = {}         # prefix -> why it could not be made or was refused
        self.cleanings: list = []

    # --- making ---------------------------------------------------------------------------
    def open(self) -> "LabPool":
        if self.up_front:
            self._make(self.prefixes)
            if not self._labs:
                raise LabError("the pool has no lab: " + "; ".join(
                    f"{p}: {e}" for p, e in self.failures.items()))
        return self

    def _make(self, prefixes: list) -> list[Backend]:
        """Lock, check the machine can hold them, make and provision ``prefixes`` (one
        playbook run); the good ones join the pool as free labs."""
        from harness.lab.capacity import check_count
        from harness.lab.labs import backend_for, find_labs
        from harness.lab.provision import bring_up_many
        made = {f.prefix for f in find_labs()}
        fresh = {p for p in prefixes if p not in made}
        netns = self.backend_name == "netns"
        check_count(len(fresh) if netns else 0, 0 if netns else len(fresh))
        labs = [backend_for(p, self.backend_name) for p in prefixes]
        locked = []
        for b in labs:
            try:
                with self._cond:
                    self._stack.enter_context(b.locked())
                locked.append(b)
            except LabError as e:
                self.failures[b.prefix] = str(e)
        results = bring_up_many(locked, verbose=self.verbose, log=self.log)
        good = []
        for b in locked:
            r = results[b.prefix]
            if r.ok:
                try:
                    cleaner = LabCleaner(b)
                    cleaner.take_baseline()
                except LabError as e:
                    self.failures[b.prefix] = str(e)
                    self._retire(b, fresh=b.prefix in fresh)
                    continue
                good.append(b)
                with self._cond:
                    self._labs[b.prefix], self._cleaners[b.prefix] = b, cleaner
                    if b.prefix in fresh:
                        self._made.add(b.prefix)
                    self._free.append(b)
                    self._cond.notify()
            else:
                self.failures[b.prefix] = f"{r.step}: {r.error}"
        return good

    def _retire(self, b: Backend, fresh: bool) -> None:
        if fresh and not self.keep:
            with contextlib.suppress(LabError):
                b.down()

    # --- leasing --------------------------------------------------------------------------
    def lease(self, timeout: float | None = None) -> Backend:
        """A free, clean lab (made now if the pool makes labs on demand and has room); waits
        while all are leased.  LabError after ``timeout`` seconds, or when the pool is closed
        or has no lab left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise LabError("the lab pool is closed")
                if self._free:
                    lab = self._free.pop(0)
                    self._leased.add(lab.prefix)
                    return lab
                room = len(self._labs) + self._pending < self.size
                if not self.up_front and room:
                    self._pending += 1
                    name = self._next_name()
                    break
                if not self._labs and not self._pending:
                    raise LabError("the lab pool has no lab left: " + "; ".join(
                        f"{p}: {e}" for p, e in self.failures.items()))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise LabError(f"no lab free in the pool within {timeout:g} s")
                self._cond.wait(left)
        try:
            made = self._make([name])
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()
        if not made:
            raise LabError(f"could not make lab '{name}': {self.failures.get(name)}")
        return self.lease(timeout=None if deadline is None else max(0.0, deadline -
                                                                      time.monotonic()))

    def _next_name(self) -> str:
        while True:
            if self._next < len(self.prefixes):
                name = self.prefixes[self._next]
            else:
                name = f"{DEFAULT_TAG}{uuid.uuid4().hex[:5]}"
            self._next += 1
            if name not in self._labs and name not in self.failures:
                return name

    def release(self, lab: Backend) -> Cleaning:
        """Take ``lab`` back: clean it (see the module's docstring) and make it free again, or
        refuse it (out of the pool, removed if the pool made it) when it stays dirty."""
        with self._cond:
            if lab.prefix not in self._leased:
                raise LabError(f"lab '{lab.prefix}' is not leased from this pool")
        c = self._cleaners[lab.prefix].clean()
        self.cleanings.append(c)
        if c.found or not c.ok:
            self.log(c.summary())
        with self._cond:
            self._leased.discard(lab.prefix)
            if c.ok and not self._closed:
                self._free.append(lab)
            else:
                self.failures[lab.prefix] = c.summary()
                del self._labs[lab.prefix]
                self._cleaners.pop(lab.prefix).close()
            self._cond.notify_all()
        if not c.ok:
            self._retire(lab, fresh=lab.prefix in self._made)
        return c

    @contextlib.contextmanager
    def leased(self, timeout: float | None = None):
        """``with pool.leased() as lab:`` -- released (cleaned) also when the body fails."""
        lab = self.lease(timeout)
        try:
            yield lab
        finally:
            self.release(lab)

    # --- the end --------------------------------------------------------------------------
    def labs(self) -> list[Backend]:
        with self._cond:
            return list(self._labs.values())

    def close(self) -> None:
        """Remove the labs the pool made (unless ``keep``), let go of every lab's lock."""
        with self._cond:
            self._closed = True
            labs = list(self._labs.values())
            self._cond.notify_all()
        try:
            for b in labs:
                self._cleaners[b.prefix].close()
                if b.prefix in self._made and not self.keep:
                    try:
                        b.down()
                    except LabError as e:
                        self.log(f"pool: could not remove lab '{b.prefix}': {e}")
        finally:
            self._stack.close()

    def __enter__(self) -> "LabPool":
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
