"""A submission: what it is, how it is built, what command runs it.

SUBMISSION is a ``.c`` file (``gcc -O2 -Wall``), a ``.py`` file (the VM's ``python3``), or a
directory (``make`` if it has a Makefile, then ``./responder``; or an executable ``run``).
:func:`prepare` copies it into a fresh work directory, builds it there and says what runs it,
as a :class:`Prepared` value; a build failure, nothing runnable or a binary for another
architecture is a value too (``built=False`` and ``error``: one line), never an exception.

Builds always run on this machine, in the sandbox (:mod:`harness.grade.sandbox`: an
unprivileged uid, no capabilities, no network, a read-only filesystem but the work directory).
On netns that *is* the lab VM; for qemu/vagrant, whose guest has no compiler, C is linked
``-static`` (a Makefile gets ``LDFLAGS=-static`` in its environment) and the work directory is
copied into the guest afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.grade.sandbox import BUILD_LIMITS, bwrap_argv
from harness.util import PROJECT_ROOT, LabError

BINARY = "responder"
RUN_SCRIPT = "run"
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
GCC = ("gcc", "-O2", "-Wall")
BUILD_TIMEOUT = 120.0
MAX_BYTES = 32 << 20
VM_PYTHON = "/usr/bin/python3"
#: ELF e_machine values for the machines a lab VM can be (uname -m).
ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64",
                8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x"}
KINDS = ("c", "py", "dir")


@dataclass
class Prepared:
    """A submission ready to run (``built``), or why it cannot (``error``)."""

    name: str
    kind: str                    # c, py, dir, or "unknown"
    workdir: Path
    built: bool = False
    command: list = field(default_factory=list)   # argv inside the work directory
    how: str = ""                # one line: how it was built and is run
    build_log: str = ""
    error: str = ""              # one line when not built / not runnable


def kind_of(path: Path) -> str:
    if path.is_dir():
        return "dir"
    if path.suffix == ".c":
        return "c"
    if path.suffix == ".py":
        return "py"
    return "unknown"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def copy_in(src: Path, workdir: Path, uid: int | None) -> None:
    """The submission into ``workdir``, emptied first (nothing of an earlier grading on the
    same lab stays): a file as itself, a directory's contents, symlinks copied as links (never
    followed out of the submission), owned by the sandbox uid."""
    if workdir.is_dir() and not workdir.is_symlink():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, workdir, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, workdir / src.name)
    if uid is not None:
        for p in [workdir, *workdir.rglob("*")]:
            os.lchown(p, uid, uid)


def sandboxed(workdir: Path, uid: int, argv: list, *, env: dict | None = None,
              timeout: float = BUILD_TIMEOUT) -> tuple[int, str]:
    """Run a build step in the sandbox (no capabilities, no network); (status, output)."""
    box = bwrap_argv(str(workdir), uid, argv, BUILD_LIMITS, raw=False, network=False)
    for k, v in (env or {}).items():
        box[1:1] = ["--setenv", k, v]
    try:
        res = subprocess.run(box, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        return -1, out + f"\n(tcplab: stopped after {timeout:g} s: the build's time limit)\n"
    return res.returncode, res.stdout.decode(errors="replace")


def elf_machine(path: Path) -> str | None:
    """The machine an ELF file is for (``x86_64``), None if it is not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    code = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(code, f"machine {code}")


def _executable(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and bool(path.stat().st_mode & 0o111)


def _runnable(prep: Prepared, target: str, machine: str) -> Prepared:
    """Check that ``target`` (in the work dir) can run on ``machine``; set command/error."""
    path = prep.workdir / target
    arch = elf_machine(path)
    if arch is not None and arch != machine:
        prep.error = (f"{target} is a program for {arch}, but the lab VM is {machine}: build "
                      f"it for {machine} (or hand in the source)")
        return prep
    with open(path, "rb") as f:
        magic = f.read(2)
    if arch is None and magic != b"#!":
        prep.error = f"{target} is neither a program (ELF) nor a script starting with #!"
        return prep
    prep.built, prep.command = True, [f"./{target}"]
    return prep


def _build_c(prep: Prepared, source: str, uid: int, static: bool) -> int:
    cmd = [*GCC, *(["-static"] if static else []), "-o", BINARY, source]
    status, out = sandboxed(prep.workdir, uid, cmd)
    prep.build_log += f"$ {' '.join(cmd)}\n{out}" + ("" if out.endswith("\n") or not out
                                                       else "\n") + f"(exit {status})\n"
    prep.how = (f"{' '.join(cmd)} in the sandbox" +
                (" on the host, copied into the guest" if static else ""))
    return status


def _first_error(log: str, fallback: str) -> str:
    for line in log.splitlines():
        if "error" in line.lower() and not line.startswith("$ "):
            return line.strip()
    return fallback


def prepare(src: Path, workdir: Path, *, uid: int, machine: str, static: bool) -> Prepared:
    """Copy ``src`` into ``workdir``, build it in the sandbox, say how it runs (see module)."""
    if not src.exists():
        raise LabError(f"no submission at {src}")
    kind = kind_of(src)
    prep = Prepared(src.name, kind, workdir)
    if kind == "unknown":
        prep.error = (f"{src.name} is not a submission tcplab can run: hand in a .c file, a "
                      f".py file or a directory (with a Makefile, or an executable 'run')")
        return prep
    if _size(src) > MAX_BYTES:
        prep.error = f"{src.name} is larger than {MAX_BYTES >> 20} MiB"
        return prep
    copy_in(src, workdir, uid)
    if kind == "c":
        if _build_c(prep, src.name, uid, static) != 0 or not (workdir / BINARY).is_file():
            prep.error = "the build failed: " + _first_error(prep.build_log, "see the build log")
            return prep
        return _runnable(prep, BINARY, machine)
    if kind == "py":
        check = [VM_PYTHON, "-c", "import ast,sys; ast.parse(open(sys.argv[1],'rb').read(), "
                 "sys.argv[1])", src.name]
        status, out = sandboxed(workdir, uid, check)
        prep.build_log = f"$ python3: syntax check of {src.name}\n{out}(exit {status})\n"
        prep.how = f"{VM_PYTHON} {src.name} (the VM's python3)"
        if status != 0:
            prep.error = "the syntax check failed: " + (out.strip().splitlines() or ["?"])[-1]
            return prep
        prep.built, prep.command = True, [VM_PYTHON, src.name]
        return prep
    return _prepare_dir(prep, uid, machine, static)


def _prepare_dir(prep: Prepared, uid: int, machine: str, static: bool) -> Prepared:
    wd = prep.workdir
    makefile = next((m for m in MAKEFILES if (wd / m).is_file()), None)
    if makefile:
        env = {"LDFLAGS": "-static"} if static else {}
        status, out = sandboxed(wd, uid, ["make"], env=env)
        prep.build_log = (f"$ {'LDFLAGS=-static ' if static else ''}make\n{out}"
                          f"(exit {status})\n")
        if status != 0:
            prep.error = "make failed: " + _first_error(out, f"exit {status}")
            return prep
    for target, how in ((BINARY, "make, then ./responder" if makefile else "./responder"),
                        (RUN_SCRIPT, "./run")):
        if _executable(wd / target):
            prep.how = how + " in the sandbox" if makefile else how
            return _runnable(prep, target, machine)
    prep.error = (f"nothing runnable in {prep.name}/: " +
                  ("make built no executable 'responder', and there is no executable 'run'"
                   if makefile else "no Makefile, no executable 'responder' or 'run'"))
    return prep


def tcplab_as_submission(dest: Path, app: str = "hello") -> Path:
    """tcplab's own responder as a student would hand it in: a directory with a copy of
    ``responder/`` and a ``run`` script (told nothing, so address and app are in the script).
    The reference a rubric is checked against (tests, bench)."""
    dest.mkdir(parents=True)
    shutil.copytree(PROJECT_ROOT / "responder", dest / "responder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (dest / RUN_SCRIPT).write_text(f"#!/bin/sh\nexec python3 -m responder --listen "
                                   f"192.168.56.100:80 --app {app}\n")
    (dest / RUN_SCRIPT).chmod(0o755)
    return dest
