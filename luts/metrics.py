"""Agreement between estimated and measured latency, and the proxies an estimate must beat."""

from __future__ import annotations

import numpy as np

from hwprune.profiler.keyspace import macs  # noqa: F401  (re-exported: luts.metrics.macs)


def agreement(estimate: np.ndarray, measured: np.ndarray) -> dict:
    """R² against the identity line and for the best linear fit, MAPE, max error, Spearman."""
    est, meas = np.asarray(estimate, float), np.asarray(measured, float)
    ss_tot = float(((meas - meas.mean()) ** 2).sum())
    r2_identity = 1.0 - float(((meas - est) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    if np.ptp(est) > 0 and len(est) > 2:
        from scipy import stats  # 1.2 s to import: only when a fit is made

        fit = stats.linregress(est, meas)
        r2_linear, slope, intercept = float(fit.rvalue ** 2), float(fit.slope), float(fit.intercept)
        rho = float(stats.spearmanr(est, meas).statistic)
    else:
        r2_linear = slope = intercept = rho = float("nan")
    return {"r2_identity": r2_identity, "r2_linear": r2_linear,
            "mape": float(np.mean(np.abs(est - meas) / meas)),
            "max_abs_err_ms": float(np.max(np.abs(est - meas))),
            "spearman": rho, "fit_slope": slope, "fit_intercept_ms": intercept,
            "n_samples": int(len(est))}


def proxy_agreement(proxy: np.ndarray, measured: np.ndarray) -> dict:
    """A proxy has no unit of time: fit it linearly to the measurements, then score the fit."""
    proxy, meas = np.asarray(proxy, float), np.asarray(measured, float)
    from scipy import stats  # 1.2 s to import: only when a fit is made

    fit = stats.linregress(proxy, meas)
    result = agreement(fit.intercept + fit.slope * proxy, meas)
    result["note"] = "linear fit of the proxy on these same variants (in-sample)"
    return result


