"""Statistics of a benchmark run: no I/O, no clock, so every function is unit-tested.

A *round* measures every subject and its reference back to back, so the machine's noise (other
engineers' tests on two cores) hits both alike.  A figure is the median of the rounds with the
min and max beside it; a ratio is taken per round (subject / reference of the same round) and
then summarised the same way, never as a ratio of medians.
"""

from __future__ import annotations

import math
import operator
from statistics import median

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def percentile(values, p: float) -> float | None:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in 0..100")
    k = (len(xs) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def latency_summary(values_s) -> dict:
    """p50/p90/p99/max of latencies given in seconds, reported in milliseconds."""
    xs = list(values_s)
    out = {f"p{p}": percentile(xs, p) for p in (50, 90, 99)}
    out["max"] = max(xs) if xs else None
    return {k: (None if v is None else round(v * 1000, 3)) for k, v in out.items()}


def summarize(rounds) -> dict:
    """Median, min and max of one figure over rounds (None rounds, i.e. failed ones, skipped)."""
    xs = [float(x) for x in rounds if x is not None and not math.isnan(float(x))]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "rounds": []}
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "rounds": xs}


def ratios(subject_rounds, reference_rounds) -> list:
    """Per-round ratios subject/reference (None where either is missing or the reference is 0).
    The lists are paired by round: round i of both was measured back to back."""
    if len(subject_rounds) != len(reference_rounds):
        raise ValueError(f"{len(subject_rounds)} subject rounds vs "
                         f"{len(reference_rounds)} reference rounds: ratios pair them by round")
    out = []
    for s, r in zip(subject_rounds, reference_rounds):
        out.append(None if s is None or r is None or r == 0 else s / r)
    return out


def target_met(value, op: str, bound: float):
    """Is ``value op bound`` (e.g. ``ratio >= 1.0``)?  None when there is no value."""
    if value is None:
        return None
    return bool(OPS[op](value, bound))


def shortfall(value, op: str, bound: float) -> str:
    """How far a value misses a target, in words ('' when it is met or unknown):
    ``0.62 >= 1.0`` -> 'missed by 38% (0.62 vs 1.0)'."""
    if value is None or target_met(value, op, bound):
        return ""
    if bound == 0:
        return f"missed ({value:.3g} vs {bound:g})"
    rel = abs(value - bound) / abs(bound) * 100
    return f"missed by {rel:.0f}% ({value:.3g} vs {op} {bound:g})"


def comparison(item: str, figure: str, unit: str, subject: str, reference: str,
               subject_rounds, reference_rounds, *, target_op: str | None = None,
               target: float | None = None, target_on: str = "ratio",
               better: str = "higher", note: str = "") -> dict:
    """One row of the table: a subject against its same-run reference, per-round ratio
    summarised, and, when given, the target (on the ratio's median, or with
    ``target_on='value'`` on the subject's own median)."""
    subj = summarize(subject_rounds)
    ref = summarize(reference_rounds)
    rat = summarize(ratios(list(subject_rounds), list(reference_rounds)))
    row = {"item": item, "figure": figure, "unit": unit, "subject": subject,
           "reference": reference, "better": better, "subject_value": subj,
           "reference_value": ref, "ratio": rat, "target": None, "met": None, "note": note}
    if target_op is not None:
        judged = rat["median"] if target_on == "ratio" else subj["median"]
        row["target"] = {"op": target_op, "value": target, "on": target_on}
        row["met"] = target_met(judged, target_op, target)
        row["shortfall"] = shortfall(judged, target_op, target)
    return row


def shares(parts: dict) -> dict:
    """Each part's share (0..1) of the total of all parts; {} for an empty or zero total."""
    total = sum(v for v in parts.values() if v)
    if not total:
        return {}
    return {k: (v or 0) / total for k, v in parts.items()}
