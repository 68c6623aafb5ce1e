"""Summaries of repeated measurements: median and spread."""

import statistics


def quantile(sorted_values, q):
    """Linear-interpolated quantile of already sorted values (q in 0..1)."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values):
    """n, median, min, max, p25, p75 (the IQR), p99 and mean of `values`; None if empty."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "p25": quantile(values, 0.25),
        "p75": quantile(values, 0.75),
        "p99": quantile(values, 0.99),
        "mean": statistics.fmean(values),
    }


def one(value):
    """A single measurement, shaped as a summary."""
    return summary([value]) if value is not None else None
