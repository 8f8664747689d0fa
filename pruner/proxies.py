"""Can latency-awareness matter for this model on this device? The table against the simple
proxies a user could prune to instead (FLOPs, parameter count), on the pruned variants the
table's calibration measured end to end, and the layers whose share of the latency departs
most from their share of the FLOPs.

Where a straight line through a proxy predicts the measured variants as well as the table
does, a latency table cannot rank pruning choices better than that proxy: a FLOPs (or
parameter) budget will do as well. Where it does not (GPU staircases, memory-bound
depthwise layers, runtimes with channel-block kernels, launch floors), it can.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from hwprune.luts import Lut, LutError, agreement, estimate, proxy_agreement
from hwprune.luts.variants import build_variant
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.keyspace import macs, trace_model
from hwprune.pruner.groups import GroupError
from hwprune.pruner.plan import Plan, PlanConfig, make_plan
from hwprune.sizes import Size, hw

# A proxy "does as well" when its fitted line's MAPE is within this many points of the
# table's: both are fitted on the same few variants, and a point or two is within what two
# validations of one table differ by on a shared VM (docs/validation.md).
AS_WELL_POINTS = 0.02
TOP_SHARES = 3


@dataclass
class ProxyCheck:
    available: bool
    line: str                          # the one line a user can act on
    n_variants: int = 0
    table: dict = field(default_factory=dict)   # agreement of the table's estimates
    flops: dict = field(default_factory=dict)   # of a line fitted through the FLOPs
    params: dict = field(default_factory=dict)  # ... through the parameter counts
    departures: list[dict] = field(default_factory=list)  # latency vs FLOPs share, by layer

    def as_dict(self) -> dict:
        return asdict(self)


def _variants(module: nn.Module, lut: Lut, size: Size, in_ch: int, tags: list[str]):
    trace = trace_model(module, size, in_ch)
    dims = dimensions(trace.layers, trace.frozen_dims)
    example = torch.zeros(1, in_ch, *hw(size))
    for tag in tags:
        channels = tuple(int(c) for c in tag.split())
        if len(channels) != len(dims):
            raise ValueError(f"calibration variant '{tag}' has {len(channels)} dimensions, "
                             f"the model {len(dims)}")
        yield build_variant(module, trace, dims, channels, example)


def departures(layers: list[dict], top: int = TOP_SHARES) -> list[dict]:
    """The layers whose latency share departs most from their FLOPs share (plan.json's
    ``layers``: name, latency_share, flops_share)."""
    ranked = sorted(layers, key=lambda x: -abs(x["latency_share"] - x["flops_share"]))
    return [{"name": x["name"], "op": x["op"], "latency_share": x["latency_share"],
             "flops_share": x["flops_share"]} for x in ranked[:top]]


def _line(n: int, table: dict, flops: dict, params: dict, worst: list[dict]) -> str:
    name, best = min((("FLOPs", flops), ("parameter count", params)),
                     key=lambda p: p[1]["mape"])
    figures = (f"on {n} pruned variants measured here, the table's MAPE is "
               f"{100 * table['mape']:.1f}%, a line through the {name} "
               f"{100 * best['mape']:.1f}%")
    shares = "; ".join(f"{x['name']} {100 * x['latency_share']:.0f}% of the latency, "
                       f"{100 * x['flops_share']:.0f}% of the FLOPs" for x in worst)
    if best["mape"] <= table["mape"] + AS_WELL_POINTS:
        unit = "FLOPs" if name == "FLOPs" else "parameter"
        return (f"on this device latency follows the {name} within "
                f"{100 * best['mape']:.0f}% ({figures}): a {unit} budget will do as well as "
                f"the latency table here")
    return (f"latency does not follow a simple proxy here ({figures}): latency-awareness "
            f"can matter; largest departures: {shares}")


def proxy_check(module: nn.Module, lut: Lut, size: Size, in_channels: int,
                layers: list[dict] | None = None, model: str = "model") -> ProxyCheck:
    """Compare ``lut`` with the FLOPs and parameter-count lines on its calibration variants.

    Args:
        module: the unpruned model the table was made for.
        lut: its table; the comparison needs a calibration (``hwprune lut calibrate``).
        size, in_channels: the input the table was profiled at.
        layers: the plan's per-layer shares (``Plan.as_dict()["layers"]``), to name the
            layers whose latency share departs most from their FLOPs share.
    Returns:
        A ``ProxyCheck``; ``available`` False (with the reason in ``line``) without
        calibration variants of this model at this size.
    Example:
        >>> check = proxy_check(net, Lut.load("lut.parquet"), 224, 3)
        >>> print(check.line)
    """
    cal = lut.meta.get("calibration") or {}
    tags, measured = cal.get("variants") or [], cal.get("measured_ms") or []
    worst = departures(layers) if layers else []
    if len(tags) < 3 or len(measured) != len(tags):
        return ProxyCheck(False, "no proxy comparison: the table has no calibration variants "
                                 "(`hwprune lut calibrate` measures them; then plan compares "
                                 "the table with fitted FLOPs and parameter-count lines)",
                          departures=worst)
    if cal.get("model") not in (None, model) or \
            list(np.atleast_1d(cal.get("input_size", []))) != list(np.atleast_1d(size)):
        return ProxyCheck(False, f"no proxy comparison: the table's calibration is of "
                                 f"{cal.get('model')} at {cal.get('input_size')}, not of "
                                 f"{model} at {size}", departures=worst)
    est, flops, params = [], [], []
    for net in _variants(module.eval(), lut, size, in_channels, tags):
        e = estimate(net, lut, size, in_channels)
        est.append(e.total_ms)
        flops.append(sum(macs(r.key) for r in trace_model(net, size, in_channels).layers))
        params.append(sum(p.numel() for p in net.parameters()))
    meas = np.asarray(measured, float)
    table = agreement(np.asarray(est), meas)
    f, p = proxy_agreement(np.asarray(flops, float), meas), \
        proxy_agreement(np.asarray(params, float), meas)
    return ProxyCheck(True, _line(len(tags), table, f, p, worst), len(tags), table, f, p, worst)


def plan_with_proxies(module: nn.Module, lut: Lut, size: Size, in_channels: int,
                      cfg: PlanConfig | None = None,
                      model: str = "model") -> tuple[Plan, ProxyCheck]:
    """``hwprune plan``'s answers: the plan (``make_plan``; its errors propagate) and the
    proxy check on the plan's layer shares. A check that cannot be made says why in its
    line, and the plan stands without it.

    Example:
        >>> plan, check = plan_with_proxies(net, Lut.load("lut.parquet"), 224, 3)
        >>> plan.reach.floor_ms, check.line
    """
    plan = make_plan(module.eval(), lut, size, in_channels, cfg, model)
    try:
        check = proxy_check(module, lut, size, in_channels, plan.as_dict()["layers"], model)
    except (ValueError, LutError, GroupError) as exc:
        check = ProxyCheck(False, f"no proxy comparison: {exc}")
    return plan, check


__all__ = ["ProxyCheck", "proxy_check", "plan_with_proxies", "departures", "AS_WELL_POINTS"]
