"""Lab hosts: the machines of an Ansible inventory (``--hosts INVENTORY``) that hold remote labs.

The inventory is Ansible's own (YAML, INI, a directory, anything ``ansible-inventory`` reads),
and Ansible reads it: :func:`read_inventory` runs ``ansible-inventory --list`` and takes every
host in it, in the inventory's order, with its variables resolved (group_vars, host_vars).
Ansible then reaches each host with those variables; the harness's own *drive* connection
(captures, clients, the ProxyCommand to a lab's VM; :mod:`harness.lab.remote`) reaches it with
the same ones, turned into an ssh_config by :meth:`LabHost.ssh_config`:

* ``ansible_host`` (default: the inventory name), ``ansible_port``, ``ansible_user`` (default:
  the user tcplab runs as, root), ``ansible_ssh_private_key_file``;
* ``ansible_ssh_common_args`` / ``ansible_ssh_extra_args``: ``-o Key=Value`` options (and
  ``-i``, ``-p``, ``-l``, ``-J``, ``-4``, ``-6``, ``-C``), e.g. a ProxyCommand;
* ``ansible_become`` (sudo, to root, without a password): commands there start with
  ``sudo -n``;
* ``ansible_python_interpreter``: the python3 (3.9 or newer) that runs tcplab's code there.

What the drive connection cannot do is refused, naming the host, the variable and what to do:
passwords (it runs in batch mode: keys only), a become method other than passwordless sudo to
root, ``ansible_connection`` other than ssh, templated values.

:func:`parse_play` reads an ``ansible-playbook`` run's output (the default callback) into what
happened to each host: the recap counts and the last failure with its task, so every host is
reported on its own; :func:`host_problem` turns a lab host's failure into one line saying what
to fix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.util import PROJECT_ROOT, LabError

#: ssh's flags that ansible_ssh_common_args may use, as ssh_config keywords.
SSH_OPTION_FLAGS = {"-4": ("AddressFamily", "inet"), "-6": ("AddressFamily", "inet6"),
                    "-C": ("Compression", "yes")}
SSH_VALUE_FLAGS = {"-i": "IdentityFile", "-p": "Port", "-l": "User", "-J": "ProxyJump"}
SAFE_ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
TRUE = {True, "true", "True", "yes", "on", "1", 1}
RECAP_RE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$", re.M)
FATAL_RE = re.compile(r"^fatal: \[(?P<host>[^\]]+)\]: (?P<kind>UNREACHABLE|FAILED)! => "
                      r"(?P<json>\{.*)$")
TASK_RE = re.compile(r"^TASK \[(?P<task>.*)\] \**$")


@dataclass
class LabHost:
    """One host of the inventory, and how tcplab reaches it."""

    name: str
    vars: dict = field(default_factory=dict)

    def _var(self, key: str, default=None):
        value = self.vars.get(key, default)
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            raise self.error(f"{key} is a template ({value[:60]!r}): tcplab's own SSH connection "
                             f"needs a plain value; give one for this host")
        return value

    def error(self, what: str) -> LabError:
        return LabError(f"lab host {self.name}: {what}")

    @property
    def address(self) -> str:
        addr = str(self._var("ansible_host", self.name))
        if not SAFE_ADDRESS_RE.fullmatch(addr):
            raise self.error(f"ansible_host {addr[:60]!r} is not a host name or address")
        return addr

    @property
    def become(self) -> bool:
        return self._var("ansible_become", False) in TRUE

    @property
    def python(self) -> str:
        py = str(self._var("ansible_python_interpreter", "/usr/bin/python3"))
        if py.startswith("auto") or not py.startswith("/"):
            return "/usr/bin/python3"
        return py

    def check(self) -> None:
        """Refuse what tcplab's drive connection cannot do (LabError naming the variable)."""
        conn = self._var("ansible_connection", "ssh")
        if conn not in ("ssh", "smart", "paramiko", None):
            raise self.error(f"ansible_connection={conn}: a lab host is reached over SSH (for "
                             f"labs on this machine, leave out --hosts)")
        for key in ("ansible_password", "ansible_ssh_pass", "ansible_become_password",
                    "ansible_become_pass", "ansible_sudo_pass"):
            if key in self.vars:
                raise self.error(f"{key} is set, but tcplab logs in with keys only and needs "
                                 f"passwordless sudo (its SSH runs in batch mode): use "
                                 f"ansible_ssh_private_key_file and a NOPASSWD sudoers rule")
        if self.become:
            method = self._var("ansible_become_method", "sudo")
            user = self._var("ansible_become_user", "root")
            if method != "sudo" or user != "root":
                raise self.error(f"ansible_become_method={method}, ansible_become_user={user}: "
                                 f"tcplab becomes root with `sudo -n` only")
        self.address        # noqa: B018  (checked)
        self.ssh_options()

    def sudo(self) -> list[str]:
        return ["sudo", "-n", "--"] if self.become else []

    def ssh_options(self) -> list[tuple[str, str]]:
        """(Keyword, value) pairs from ansible_ssh_common_args and ansible_ssh_extra_args."""
        out = []
        for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            raw = self._var(key, "") or ""
            try:
                words = shlex.split(str(raw))
            except ValueError as e:
                raise self.error(f"{key} cannot be split into words ({e})") from None
            i = 0
            while i < len(words):
                w = words[i]
                if w == "-o" or (w.startswith("-o") and len(w) > 2):
                    opt = words[i + 1] if w == "-o" and i + 1 < len(words) else w[2:]
                    i += 2 if w == "-o" else 1
                    k, sep, v = opt.partition("=")
                    if not sep:
                        k, _, v = opt.strip().partition(" ")
                    if not k.strip() or not v.strip():
                        raise self.error(f"{key}: option {opt!r} has no value")
                    out.append((k.strip(), v.strip()))
                elif w in SSH_OPTION_FLAGS:
                    out.append(SSH_OPTION_FLAGS[w])
                    i += 1
                elif w in SSH_VALUE_FLAGS and i + 1 < len(words):
                    out.append((SSH_VALUE_FLAGS[w], words[i + 1]))
                    i += 2
                else:
                    raise self.error(f"{key}: {w!r} is not an option tcplab's SSH understands; "
                                     f"write it as -o Keyword=value")
        return out

    def ssh_config(self, control_path: Path, inventory: str) -> str:
        """The drive connection's ssh_config: tcplab's settings first (ssh keeps the first
        value it reads), then the inventory's options, then the host's login, then the user's
        and the system's own configuration."""
        lines = [f"# tcplab: drive connection to lab host {self.name} (from {inventory})",
                 "Host *", f"    ControlPath {control_path}", "    ControlMaster no",
                 "    BatchMode yes", "    ServerAliveInterval 15", "    ServerAliveCountMax 4"]
        lines += [f"    {k} {v}" for k, v in self.ssh_options()]
        if self._var("ansible_port") is not None:
            lines.append(f"    Port {int(self._var('ansible_port'))}")
        if self._var("ansible_user"):
            lines.append(f"    User {self._var('ansible_user')}")
        if self._var("ansible_ssh_private_key_file"):
            key = os.path.expanduser(str(self._var("ansible_ssh_private_key_file")))
            lines += [f"    IdentityFile {key}", "    IdentitiesOnly yes"]
        lines += ["    ConnectTimeout 15", "    Include ~/.ssh/config",
                  "    Include /etc/ssh/ssh_config"]
        return "\n".join(lines) + "\n"

    def connection_vars(self) -> dict:
        """The host's variables that reach Ansible and the lab's record: Ansible's own
        (``ansible_*``) and tcplab's (``tcplab_*``); the inventory's other variables stay out."""
        return {k: v for k, v in self.vars.items() if k.startswith(("ansible_", "tcplab_"))}

    def record(self) -> dict:
        return {"name": self.name, "vars": self.connection_vars()}

    @classmethod
    def from_record(cls, rec: dict) -> "LabHost":
        return cls(rec["name"], dict(rec.get("vars") or {}))


# --------------------------------------------------------------------------- the inventory

def inventory_env(home: Path | None = None) -> dict:
    """``ansible-inventory``'s environment: an inventory it cannot parse is an error (not a
    warning and an empty list); its home in a private directory when given."""
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="1", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(PROJECT_ROOT / "provision" / "ansible.cfg"))
    if home is not None:
        env.update(ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"))
    return env


def _inventory_error(path: Path, text: str) -> str:
    """What ``ansible-inventory`` said about ``path``: the parser that fits its name (YAML for
    .yml/.yaml/.json, else INI) and where, else its last error line."""
    kind = "yaml" if path.suffix in (".yml", ".yaml", ".json") else "ini"
    here = re.escape(str(path.resolve()))
    # ansible-core >= 2.19: "Failed to parse inventory with 'yaml' plugin: MSG" and "Origin:
    # PATH:LINE"; 2.16 (Python 3.10's) wraps its warnings: "Failed to parse PATH with yaml
    # plugin: ... Syntax Error while loading YAML. MSG The error appears to be in 'PATH': line N"
    # (its wrapping also breaks a path after a hyphen: such a line joins the next one whole)
    flat = " ".join(re.sub(r"-\n", "-", text).split())
    m = re.search(rf"Failed to parse (?:inventory|{here}) with '?{kind}'? plugin: (.*?)"
                  rf"(?= \[WARNING\]| ERROR!|$)", flat)
    where = re.search(rf"(?:Origin: {here}:|The error appears to be in '{here}': line )(\d+)",
                      flat)
    if m:
        msg = m.group(1).strip()
        old_yaml = re.search(r"Syntax Error while loading YAML\. (.*?) The error appears", msg)
        if old_yaml:
            msg = f"Syntax Error while loading YAML: {old_yaml.group(1)}"
        return msg[:300] + (f", line {where.group(1)}" if where else "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines or ["no message"])[-1][:300]


def _hosts_in_order(data: dict) -> list[str]:
    """Every host of ``ansible-inventory --list`` output, group by group from ``all``."""
    seen: list[str] = []

    def walk(group: str, depth: int = 0) -> None:
        node = data.get(group) or {}
        for h in node.get("hosts", []):
            if h not in seen:
                seen.append(h)
        for child in node.get("children", []):
            if depth < 50:
                walk(child, depth + 1)
    walk("all")
    for h in data.get("_meta", {}).get("hostvars", {}):
        if h not in seen:
            seen.append(h)
    return seen


def read_inventory(path: str | Path, home: Path | None = None) -> list[LabHost]:
    """The lab hosts of inventory ``path``, in its order, read by ``ansible-inventory``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LabError(f"no inventory {p}: give an Ansible inventory file (YAML or INI) that "
                       f"lists the lab hosts, e.g. --hosts labhosts.yml")
    exe = Path(sys.executable).with_name("ansible-inventory")
    if not exe.exists():
        raise LabError(f"{exe} not found; run `sudo ./bootstrap` to install the venv")
    try:
        res = subprocess.run([str(exe), "-i", str(p.resolve()), "--list"], capture_output=True,
                             env=inventory_env(home), stdin=subprocess.DEVNULL, timeout=120)
    except subprocess.TimeoutExpired:
        raise LabError(f"ansible-inventory did not read {p} within 120 s") from None
    if res.returncode != 0:
        raise LabError(f"Ansible cannot read the inventory {p} "
                       f"({_inventory_error(p, res.stderr.decode(errors='replace'))}): fix it "
                       f"(Ansible's inventory format, YAML or INI; check it with "
                       f"`ansible-inventory -i {p} --graph`)")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise LabError(f"ansible-inventory gave no JSON for {p}") from None
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = [LabHost(h, dict(hostvars.get(h) or {})) for h in _hosts_in_order(data)]
    if not hosts:
        raise LabError(f"the inventory {p} lists no hosts: name at least one lab host")
    return hosts


# --------------------------------------------------------------------------- a play's outcome

@dataclass
class HostOutcome:
    """What one ``ansible-playbook`` run did to one host."""

    counts: dict = field(default_factory=dict)      # ok, changed, unreachable, failed, ...
    unreachable: bool = False
    failed: bool = False
    task: str = ""                                  # the task that failed
    result: dict = field(default_factory=dict)      # its result

    @property
    def ok(self) -> bool:
        return not (self.unreachable or self.failed or self.counts.get("unreachable")
                    or self.counts.get("failed"))

    @property
    def message(self) -> str:
        r = self.result
        items = [i for i in r.get("results") or [] if isinstance(i, dict) and i.get("failed")]
        if items:                                   # a loop: its first failed item says why
            r = items[0]
        msg = str(r.get("msg") or "").strip()
        for key in ("stderr", "module_stderr", "stdout"):
            extra = str(r.get(key) or "").strip()
            if extra and extra not in msg:
                msg = f"{msg}: {extra.splitlines()[-1]}" if msg else extra.splitlines()[-1]
                break
        msg = re.sub(r'^(Task failed: )?(Data could not be sent to remote host "[^"]*"\. '
                     r'Make sure this host can be reached over ssh: '
                     r'|Failed to connect to the host via ssh: )', "", msg, flags=re.I)
        return " ".join(msg.split())[:500] or "no message"      # one line


def _json_at(lines: list[str], i: int, first: str) -> dict:
    """The JSON object that starts with ``first`` on line ``i``: on that line alone, or (the
    callback indents some results, e.g. an assert's) up to the line that closes it."""
    text = first
    for j in range(i + 1, min(len(lines), i + 400) + 1):
        try:
            res = json.loads(text)
            return res if isinstance(res, dict) else {"msg": str(res)}
        except ValueError:
            if j < len(lines) and not lines[j - 1].startswith("}"):
                text += "\n" + lines[j]
            else:
                break
    return {"msg": first[:500]}


def parse_play(output: str) -> dict[str, HostOutcome]:
    """Each host's recap counts and last failure, from the default callback's output."""
    out: dict[str, HostOutcome] = {}
    task = ""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = TASK_RE.match(line)
        if m:
            task = m.group("task")
            continue
        m = FATAL_RE.match(line)
        if m:
            o = out.setdefault(m.group("host"), HostOutcome())
            o.result = _json_at(lines, i, m.group("json"))
            o.task = task
            o.unreachable = m.group("kind") == "UNREACHABLE"
            o.failed = not o.unreachable
    recap = output.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in output else ""
    for m in RECAP_RE.finditer(recap):
        counts = {k: int(v) for k, v in (kv.split("=") for kv in m.group("counts").split())}
        out.setdefault(m.group("host"), HostOutcome()).counts = counts
    return out


def host_problem(host: LabHost, o: HostOutcome, inventory: str) -> str:
    """One line: what went wrong on lab host ``host``, and what to fix."""
    msg = o.message
    if o.unreachable:
        try:
            where = host.address
        except LabError:
            where = "?"
        hint = ("add its host key to your known_hosts (check it first, e.g. with ssh-keyscan)"
                if "Host key verification failed" in msg else
                f"check its address (ansible_host={where}), that its sshd runs, and the user "
                f"and key Ansible logs in with (ansible_user, ansible_ssh_private_key_file) in "
                f"{inventory}")
        return f"lab host {host.name} is unreachable over SSH ({msg}): {hint}"
    if "tcplab needs root" in msg:
        return msg
    if re.search(r"password is required|Missing sudo password|incorrect sudo password", msg):
        return (f"lab host {host.name}: becoming root needs a password ({msg}): give that user "
                f"passwordless sudo, or log in as root (ansible_user=root) in {inventory}")
    return f"lab host {host.name}: {o.task or 'a task'} failed: {msg}"
