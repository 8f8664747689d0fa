"""Fitting an in-network calibration and checking it on held-out variants.

Apart from ``luts.calibrate`` (which measures the variants) so that ``luts.validate`` and
``luts.info`` can describe a stored fit without importing the measuring code.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from profiler.table import LutError


class TooFewVariants(LutError):
    """The table's grid (or the variants drawn on it) cannot give the 3 distinct pruned
    variants a fit needs. The table itself is fine: it just stays uncalibrated."""


def fit_calibration(operator_sum: np.ndarray, measured: np.ndarray, n_ops: int) -> dict:
    """Least-squares ``measured = slope x sum + intercept``; the intercept per operator."""
    if len(operator_sum) < 3 or np.ptp(operator_sum) <= 0:
        raise TooFewVariants("a calibration needs at least 3 variants of different estimated "
                             "latency")
    fit = stats.linregress(operator_sum, measured)
    resid = measured - (fit.slope * operator_sum + fit.intercept)
    return {"slope": float(fit.slope), "per_op_ms": float(fit.intercept) / n_ops,
            "intercept_ms": float(fit.intercept), "n_ops": int(n_ops),
            "r2": float(fit.rvalue ** 2),
            "mape_in_sample": float(np.mean(np.abs(resid) / measured))}


def holdout_check(fit: dict, operator_sum: np.ndarray, measured: np.ndarray) -> dict:
    """Leave-one-out: each variant predicted by the fit of the others, against the plain
    operator sum. ``fit`` gains ``holdout_mape``, ``operator_sum_mape`` and ``applied``.

    A fit on few variants measured on a noisy machine can predict worse than no
    calibration at all (a quick demo fitted 0.82 x sum + 45 us per operator and then
    validated at MAPE 75% against 11% for the plain sum): such a fit is stored with its
    figures but not applied. Three variants leave none out for a check: applied, marked
    unchecked.
    """
    n = len(operator_sum)
    plain = float(np.mean(np.abs(operator_sum - measured) / measured))
    fit = {**fit, "operator_sum_mape": plain, "holdout_mape": None, "applied": True}
    if n < 4:
        return fit
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        try:
            f = fit_calibration(operator_sum[keep], measured[keep], fit["n_ops"])
        except TooFewVariants:  # the others all had one estimate: nothing to predict from
            return {**fit, "applied": False, "holdout_mape": float("inf")}
        pred = f["slope"] * operator_sum[i] + f["intercept_ms"]
        errs.append(abs(pred - measured[i]) / measured[i])
    fit["holdout_mape"] = float(np.mean(errs))
    fit["applied"] = fit["holdout_mape"] < plain
    return fit


def describe_holdout(fit: dict) -> str:
    """One clause on whether a stored fit is applied, and why (empty for older tables)."""
    if "applied" not in fit:
        return ""
    if fit["applied"] and fit.get("holdout_mape") is None:
        return "applied, unchecked (3 variants leave none out for a check)"
    held = f"held-out MAPE {100 * fit['holdout_mape']:.1f}%" \
        if np.isfinite(fit["holdout_mape"]) else "no held-out prediction possible"
    if fit["applied"]:
        return f"applied ({held} against {100 * fit['operator_sum_mape']:.1f}% for the plain " \
               f"operator sum)"
    return (f"NOT applied: {held} is no better than the plain operator sum's "
            f"{100 * fit['operator_sum_mape']:.1f}%, so estimates stay plain sums "
            f"(calibrate on more variants or on a quieter machine)")


__all__ = ["TooFewVariants", "fit_calibration", "holdout_check", "describe_holdout"]
