"""The benchmark's outputs: the table printed at the end, ``bench/results/<time>.json`` and a
plot beside it (``<time>.png``).

The JSON's shape (``version`` 1)::

    {"version": 1, "started": ISO time, "finished": ..., "quick": bool, "params": {...},
     "machine": {"cpu_model", "cores", "kernel", "python", "loadavg_before", ...},
     "git": {"commit", "dirty"},
     "items": {"handshake": {...raw figures per round...}, "http": ..., "checksum": ...,
               "tarpit": ..., "lab": ..., "profile": ..., "grading": ...},  # may hold "error"
     "comparisons": [row, ...]}   # rows from bench.stats.comparison

The table has one line per comparison: the subject and its reference as median [min-max] over
the rounds, the per-round ratio summarised the same way, the target and whether it was met.
"""

from __future__ import annotations

import json
from pathlib import Path

ITEMS = ("handshake", "http", "checksum", "tarpit", "lab", "profile", "labs", "grading")


def fmt_num(x) -> str:
    """A figure in 3-4 significant digits, thousands with a comma: 8512.3 -> '8,512'."""
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_summary(s: dict | None, unit: str = "") -> str:
    """'8,512 [7,900-8,800]' from a stats.summarize() dict ('-' when there is nothing)."""
    if not s or s.get("median") is None:
        return "-"
    unit = f" {unit}" if unit else ""
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{fmt_num(s['median'])}{unit}"
    return f"{fmt_num(s['median'])}{unit} [{fmt_num(s['min'])}-{fmt_num(s['max'])}]"


def fmt_target(row: dict) -> str:
    t = row.get("target")
    if not t:
        return ""
    what = "x" if t["on"] == "ratio" else f" {row['unit']}"
    return f"{t['op']} {t['value']:g}{what}"


def fmt_met(row: dict) -> str:
    if row.get("met") is None:
        return "" if not row.get("target") else "?"
    return "yes" if row["met"] else "NO"


COLUMNS = ("item", "figure", "subject", "value", "reference", "ref. value", "ratio", "target",
           "met")


def table_rows(result: dict) -> list[tuple]:
    rows = []
    for r in result.get("comparisons", []):
        rows.append((r["item"], f"{r['figure']} ({r['unit']})", r["subject"],
                     fmt_summary(r["subject_value"]), r["reference"],
                     fmt_summary(r["reference_value"]), fmt_summary(r["ratio"], "x"),
                     fmt_target(r), fmt_met(r)))
    return rows


def format_table(result: dict, markdown: bool = False) -> str:
    """The comparison table as aligned text, or as a Markdown table for the README."""
    rows = table_rows(result)
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(COLUMNS, *rows)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(COLUMNS, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def format_machine(result: dict) -> str:
    m = result.get("machine", {})
    return (f"machine: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, Linux "
            f"{m.get('kernel', '?')}, Python {m.get('python', '?')}; load average "
            f"{m.get('loadavg_before', '?')} before, {m.get('loadavg_after', '?')} after; "
            f"{'quick' if result.get('quick') else 'full'} run, {result.get('rounds', '?')} "
            f"rounds, {result.get('started', '?')}")


def format_errors(result: dict) -> str:
    errs = [f"  {k}: {v['error']}" for k, v in result.get("items", {}).items()
            if isinstance(v, dict) and v.get("error")]
    return ("items that failed:\n" + "\n".join(errs)) if errs else ""


def format_missed(result: dict) -> str:
    missed = [f"  {r['item']} {r['figure']} ({r['subject']}): {r['shortfall']}"
              for r in result.get("comparisons", []) if r.get("met") is False]
    return ("targets missed:\n" + "\n".join(missed)) if missed else ""


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def plot(result: dict, path: Path) -> Path | None:
    """Ratios (median, min-max bars, target marks) and the lab's step shares, one PNG.
    Returns None when matplotlib is not installed (the JSON and table are still written)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result.get("comparisons", []) if r["ratio"]["median"] is not None]
    shares = result.get("items", {}).get("lab", {}).get("shares", {})
    fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(15 if shares else 10,
                                                             1.2 + 0.42 * max(len(rows), 4)),
                             gridspec_kw={"width_ratios": [3, 1.4]} if shares else None,
                             squeeze=False)
    _plot_ratios(axes[0][0], rows, result)
    if shares:
        _plot_shares(axes[0][1], shares, plt.get_cmap("tab20"))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")     # the legend below the axes too
    plt.close(fig)
    return path


def _plot_ratios(ax, rows: list, result: dict) -> None:
    """The rows' ratios: median bars with min-max whiskers, green met, red missed; a target
    on the ratio as a black mark, one on the value said beside the bar."""
    labels = [f"{r['item']}: {r['figure']}\n{r['subject']} / {r['reference']}" for r in rows]
    y = list(range(len(rows)))[::-1]
    med = [r["ratio"]["median"] for r in rows]
    lo = [r["ratio"]["median"] - r["ratio"]["min"] for r in rows]
    hi = [r["ratio"]["max"] - r["ratio"]["median"] for r in rows]
    colors = ["tab:green" if r.get("met") else "tab:red" if r.get("met") is False
              else "tab:gray" for r in rows]
    ax.barh(y, med, xerr=[lo, hi], color=colors, alpha=0.75, capsize=3)
    for yi, r in zip(y, rows):
        t = r.get("target")
        if t and t["on"] == "ratio":
            ax.plot([t["value"]] * 2, [yi - 0.4, yi + 0.4], color="black", lw=2)
        elif t:     # a target on the value itself: the bar is still the ratio; say the value
            ax.annotate(f" {fmt_num(r['subject_value']['median'])} {r['unit']} "
                        f"(target {t['op']} {t['value']:g})", (r["ratio"]["max"], yi),
                        va="center", fontsize=7)
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("ratio subject / reference (median of rounds, bars: min-max; "
                  "black: target; green met, red missed)", fontsize=8)
    ax.set_title(f"tcplab bench {result.get('started', '')} "
                 f"({'quick' if result.get('quick') else 'full'})", fontsize=9)


def _plot_shares(ax, shares: dict, cmap) -> None:
    """The lab's step shares (item 5): one stacked bar of wall-time shares per command."""
    names = list(shares)
    left = {n: 0.0 for n in names}
    steps = sorted({s for v in shares.values() for s in v})
    for i, step in enumerate(steps):
        vals = [shares[n].get(step, 0.0) for n in names]
        ax.barh(names, vals, left=[left[n] for n in names], color=cmap(i % 20),
                 label=step)
        for n, v in zip(names, vals):
            left[n] += v
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of wall time", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper right", bbox_to_anchor=(1.0, -0.1), ncol=1)
    ax.set_title("lab: where the time goes", fontsize=9)


def main(argv=None) -> int:
    """``python -m bench.report RESULT.json [--markdown]``: show a saved run again (the
    README's table is made this way)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    p.add_argument("path", type=Path)
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = p.parse_args(argv)
    result = json.loads(args.path.read_text())
    print(format_machine(result) + "\n")
    print(format_table(result, markdown=args.markdown))
    for extra in (format_missed(result), format_errors(result)):
        if extra:
            print("\n" + extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
