"""Configuration that only runs elsewhere is checked here: every GitHub workflow against
GitHub's workflow schema (check-jsonschema's vendored copy, offline) and the script of each of
its `run:` steps with shellcheck, as are `bootstrap` and `.ci/run`; the Ansible roles and playbook with ansible-lint's production
profile (what the README promises).  Each check is also shown failing on a broken input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
VENV_BIN = Path(sys.executable).parent
EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)


def check_schema(*files: Path) -> subprocess.CompletedProcess:
    exe = VENV_BIN / "check-jsonschema"
    assert exe.exists(), f"{exe} missing: requirements.txt pins check-jsonschema"
    return subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows",
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def run_scripts(workflow: Path) -> list[tuple[str, str]]:
    """(job/step name, script as bash runs it) for every `run:` step.  GitHub's default shell
    on Linux is `bash -e {0}`, `shell: bash` adds pipefail; a `${{ ... }}` expression is
    replaced by a plain word, as its value is pasted in before the shell sees the script."""
    doc = yaml.safe_load(workflow.read_text())
    out = []
    for job_name, job in doc.get("jobs", {}).items():
        default = (job.get("defaults") or {}).get("run", {}).get("shell")
        for i, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            shell = step.get("shell", default)
            if shell not in (None, "bash"):
                raise AssertionError(f"{workflow.name}: {job_name} step {i}: shell {shell!r} "
                                     f"is not checked by this test")
            head = "#!/bin/bash\nset -e\n" + ("set -o pipefail\n" if shell == "bash" else "")
            out.append((f"{job_name}: {step.get('name', i)}",
                        head + EXPR.sub("GHA_EXPR", step["run"])))
    return out


def shellcheck(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["shellcheck", "-s", "bash", "-f", "gcc", "-"], input=script,
                          capture_output=True, text=True, timeout=60)


def need_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (packages/apt-test.txt; "
                    "`sudo ./bootstrap test` installs it)")


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "virtualbox.yml"}


def test_workflows_match_githubs_schema():
    res = check_schema(*WORKFLOWS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_run_steps_pass_shellcheck():
    need_shellcheck()
    problems = []
    for wf in WORKFLOWS:
        for name, script in run_scripts(wf):
            res = shellcheck(script)
            if res.returncode != 0:
                problems.append(f"{wf.name} / {name}:\n{res.stdout}")
    assert not problems, "\n".join(problems)


def test_bootstrap_and_ci_entry_pass_shellcheck():
    need_shellcheck()
    res = subprocess.run(["shellcheck", "-f", "gcc", "bootstrap", ".ci/run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout


BROKEN = """\
name: broken
on: push
jobs:
  j:
    runs-on: ubuntu-24.04
    timeout-minutes: soon
    steps:
      - name: unquoted
        run: |
          for f in $(ls ${{ github.workspace }}); do cat $f; done
"""


def test_the_checks_fail_on_a_broken_workflow(tmp_path):
    bad = tmp_path / "broken.yml"
    bad.write_text(BROKEN)
    res = check_schema(bad)
    assert res.returncode != 0 and "timeout-minutes" in res.stdout + res.stderr
    need_shellcheck()
    [(name, script)] = run_scripts(bad)
    assert "GHA_EXPR" in script and "${{" not in script
    res = shellcheck(script)
    assert res.returncode != 0 and "SC2045" in res.stdout, res.stdout    # for f in $(ls ...)


def test_ansible_lint_production_profile_passes():
    res = subprocess.run([str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Profile 'production' was required, and it passed" in out, out[-2000:]
