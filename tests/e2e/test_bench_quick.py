"""End-to-end smoke test of ``invoke bench --quick`` on a lab of its own: it runs, prints the
table, writes the JSON (every item, no item failed) and the plot, and leaves no lab behind.
No assertion on any figure: this machine is shared and noisy; the figures are the report's."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench.report import ITEMS          # every item, in the order their rows are numbered
from tests.conftest import ROOT, new_prefix, require_lab_machine, root_ns_state

pytestmark = pytest.mark.e2e

QUICK = [i for i in ITEMS if i != "grading"]     # --quick leaves grading out unless named



def test_invoke_bench_quick_writes_every_item():
    require_lab_machine()
    prefix = new_prefix("bq")
    before = root_ns_state()
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "invoke", "bench", "--quick", "--prefix", prefix],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"invoke bench --quick took {took:.1f} s")
    line = next(l for l in r.stdout.splitlines() if l.startswith("results: "))
    json_path = ROOT / line.split()[1].rstrip(",")
    result = json.loads(json_path.read_text())
    for item in QUICK:
        assert item in result["items"], item
        assert "error" not in result["items"][item], result["items"][item].get("error")
    numbers = {row["item"].split()[0] for row in result["comparisons"]}
    assert numbers == {str(ITEMS.index(i) + 1) for i in QUICK}     # each item gave its rows
    for key in ("cpu_model", "cores", "kernel", "python"):
        assert result["machine"][key]
    assert "hello exchanges/s" in r.stdout and "ratio" in r.stdout
    assert json_path.with_suffix(".png").exists()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix[:8] not in ns, ns
    assert root_ns_state() == before
