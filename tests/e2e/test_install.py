"""The install on the machines people have: each supported controller Python (3.10 Ubuntu 22.04,
3.12 Ubuntu 24.04, 3.13 Debian 13; Debian 12's 3.11 runs the rest of the suite) does exactly
what the README says, ``PYTHON=... ./bootstrap demo``, in a fresh ``git clone`` of this checkout
(its committed HEAD), then the unit tests with that venv; and the responder's own unit tests
run under Python 3.9, the oldest interpreter it supports.

The interpreters come from pyenv (``$PYENV_ROOT/versions/3.X.*``); where there is none (GitHub's
runners) the test skips and says so.  What is cached between runs on one machine, under
``~/.cache/tcplab/controllers/``: each Python's venv, kept at the same absolute path (a venv's
scripts name it) and moved into each fresh clone, so ``bootstrap`` finds it up to date unless
requirements.txt or the interpreter changed, when it rebuilds it as a user's machine would.
Everything else (the clone, bootstrap's checks, the lab, the demo, the unit tests) is new each
run.  A cold cache adds ~30 s of pip per Python.
"""

from __future__ import annotations

import ast
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, new_prefix, require_lab_machine

CONTROLLERS = ("3.10", "3.12", "3.13")
RESPONDER_PYTHON = "3.9"
RESPONDER_REQUIREMENTS = ROOT / "tests" / "requirements-responder.txt"

# Run by the clone's venv: every requirements.txt line whose marker holds for this Python is
# what is installed (the markers select what they say), and ansible runs on this Python.
CHECK_PINS = r"""
import importlib.metadata as md, sys
from packaging.requirements import Requirement
bad = []
for line in open("requirements.txt"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    req = Requirement(line)
    if req.marker and not req.marker.evaluate():
        continue
    have = md.version(req.name)
    if not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req.name} {have} is not {req.specifier}")
print("\n".join(bad) or "pins ok")
sys.exit(1 if bad else 0)
"""


def find_python(minor: str) -> Path | None:
    """The newest pyenv interpreter of this minor version, or None."""
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    found = [Path(p) for p in glob.glob(f"{root}/{minor}.*/bin/python3")
             if re.fullmatch(rf"{re.escape(minor)}\.\d+", Path(p).parent.parent.name)]
    found.sort(key=lambda p: tuple(int(x) for x in p.parent.parent.name.split(".")))
    return found[-1] if found else None


def need_python(minor: str) -> Path:
    py = find_python(minor)
    if py is None:
        pytest.skip(f"no Python {minor} here (looked for $PYENV_ROOT/versions/{minor}.*, "
                    f"default /root/.pyenv): this machine's pyenv has them, GitHub's runners not")
    return py


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    d = Path(base) / "tcplab" / "controllers" / name
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


@contextmanager
def locked(d: Path):
    """One test run at a time per cached venv (several checkouts may test on one machine)."""
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def fresh_clone_keeping_venv(d: Path) -> Path:
    """``d/checkout``: a new ``git clone`` of this checkout, with the cached venv moved in."""
    co, kept = d / "checkout", d / "venv"
    if (co / ".venv").is_dir() and not (co / ".venv").is_symlink():
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(co / ".venv", kept)
    shutil.rmtree(co, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(co)],
                   check=True, capture_output=True, timeout=120)
    if kept.is_dir():
        os.replace(kept, co / ".venv")
    return co


def run(cmd: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
    return res


def pytest_counts(output: str) -> dict[str, int]:
    last = [l for l in output.splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
    return {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", last[-1])} if last else {}


@pytest.mark.e2e
@pytest.mark.parametrize("minor", CONTROLLERS)
def test_bootstrap_demo_and_unit_tests_under_each_controller_python(minor):
    py = need_python(minor)
    require_lab_machine()
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from harness.lab import get_backend
    d = cache_dir(f"python{minor}")
    prefix = new_prefix("py")
    with locked(d):
        co = fresh_clone_keeping_venv(d)
        t0 = time.monotonic()
        try:
            res = run(["./bootstrap", "demo", "--prefix", prefix], co, 900, PYTHON=str(py))
        finally:
            get_backend("netns", prefix).down()
        t_demo = time.monotonic() - t0
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert "tcplab: MATCH: scenario hello passed" in out, out[-4000:]
        ver = run([".venv/bin/python", "-c", "import sys; print(sys.version.split()[0])"], co, 60)
        assert ver.stdout.startswith(minor + "."), ver.stdout
        pins = run([".venv/bin/python", "-c", CHECK_PINS], co, 60)
        assert pins.returncode == 0, pins.stdout + pins.stderr
        ans = run([".venv/bin/ansible-playbook", "--version"], co, 60)
        assert f"python version = {minor}." in ans.stdout, ans.stdout

        t0 = time.monotonic()
        unit = run([".venv/bin/python", "-m", "pytest", "-q", "-x", "tests/unit"], co, 1200)
        t_unit = time.monotonic() - t0
        counts = pytest_counts(unit.stdout)
        assert unit.returncode == 0 and counts.get("passed", 0) > 500, unit.stdout[-4000:]
        print(f"Python {minor}: bootstrap + demo {t_demo:.0f} s, unit tests {t_unit:.0f} s "
              f"({counts})")


@pytest.mark.parametrize("python", ["pyenv-3.8", "fake-3.9", "missing", "not-python"])
def test_an_unsupported_python_gets_one_line_and_nothing_is_installed(python, tmp_path):
    require_lab_machine()                     # bootstrap's first check is root
    if python == "pyenv-3.8":
        py = str(need_python("3.8"))
    elif python == "fake-3.9":                # Debian 11's python3, as bootstrap sees it
        py = str(tmp_path / "python3")
        Path(py).write_text("#!/bin/sh\necho 3.9.2\n")
        Path(py).chmod(0o755)
    elif python == "missing":
        py = str(tmp_path / "nowhere" / "python3")
    else:
        py = "/bin/true"
    venv_before = os.path.realpath(ROOT / ".venv")
    res = run([str(ROOT / "bootstrap"), "demo"], ROOT, 60, PYTHON=py)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and res.stdout == "" and len(lines) == 1, res.stderr
    assert lines[0].startswith("bootstrap: error: ") and py in lines[0], lines
    assert "3.10 to 3.13" in lines[0] and "Traceback" not in res.stderr
    assert os.path.realpath(ROOT / ".venv") == venv_before


# --- the responder under Python 3.9 ---------------------------------------------------------

ALLOWED_TOP = {"responder", "pytest", "hypothesis", "__future__"}


def _imports(tree: ast.AST):
    """(module name, optional) of every absolute import; optional = inside a try that catches
    ImportError (the test then runs without it)."""
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}

    def optional(node: ast.AST) -> bool:
        while node in parents:
            parent = parents[node]
            if isinstance(parent, ast.Try) and node in parent.body and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                   "ModuleNotFoundError")
                    for h in parent.handlers):
                return True
            node = parent
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, optional(node)) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, optional(node)


def responder_only(path: Path, seen: dict[Path, bool] | None = None) -> bool:
    """True when the test module imports only the standard library, responder, pytest,
    hypothesis and test modules that do the same (optional imports aside)."""
    seen = {} if seen is None else seen
    if path in seen:
        return seen[path]
    seen[path] = True
    for name, optional in _imports(ast.parse(path.read_text(), str(path))):
        top = name.split(".")[0]
        if optional or top in ALLOWED_TOP or top in sys.stdlib_module_names:
            continue
        target = ROOT.joinpath(*name.split(".")).with_suffix(".py")
        if top == "tests" and target.is_file() and responder_only(target, seen):
            continue
        seen[path] = False
        break
    return seen[path]


def test_responder_test_selection_follows_imports():
    chosen = {p.name for p in (ROOT / "tests" / "unit").glob("test_*.py") if responder_only(p)}
    assert {"test_wire.py", "test_tcp.py", "test_checksum.py"} <= chosen, chosen
    assert "test_scenario.py" not in chosen and "test_match.py" not in chosen, chosen


def test_responder_unit_tests_under_python_3_9():
    py = need_python(RESPONDER_PYTHON)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "unit").glob("test_*.py")
                   if responder_only(p))
    d = cache_dir(f"python{RESPONDER_PYTHON}-responder")
    venv = d / "venv"
    want = f"{py.resolve()} " + hashlib.sha256(RESPONDER_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = venv / ".tcplab-stamp"
    with locked(d):
        if not stamp.exists() or stamp.read_text() != want:
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([str(py), "-m", "venv", str(venv)], check=True, timeout=300)
            pip = run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "-r",
                       str(RESPONDER_REQUIREMENTS)], ROOT, 600)
            assert pip.returncode == 0, pip.stdout + pip.stderr
            stamp.write_text(want)
        t0 = time.monotonic()
        res = run([str(venv / "bin/python"), "-m", "pytest", "-q", *files], ROOT, 900)
    counts = pytest_counts(res.stdout)
    assert res.returncode == 0 and counts.get("passed", 0) > 200, res.stdout[-4000:]
    print(f"Python {RESPONDER_PYTHON}: {len(files)} responder test files, "
          f"{time.monotonic() - t0:.0f} s ({counts})")
