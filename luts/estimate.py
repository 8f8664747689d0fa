"""Estimate a network's latency from a LUT: the sum over every operator it runs (paper Eq. 14,
extended from convolutions to all operators, because convs alone are a fraction of it)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import nn

from hwprune.luts.lookup import Lut
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import Trace, is_conv, trace_model
from hwprune.profiler.ops import network_weight_bytes


@dataclass
class Estimate:
    layers: pd.DataFrame   # name, op, c_in, c_out, in_h, in_w, ms, exact
    total_ms: float        # the estimate: operator sum, in-network calibrated when the LUT is
    conv_ms: float         # convolutions only: the paper's Eq. 14
    interpolated: int      # layers answered by interpolation rather than an exact key
    operator_sum_ms: float = float("nan")  # every operator's row, summed, uncalibrated
    calibrated: bool = False
    cold_share: float = 1.0  # the cold timings' share in a hot/cold table (Lut.cold_share)

    def summary(self) -> str:
        how = (f"in-network calibrated; operator sum {self.operator_sum_ms:.3f} ms"
               if self.calibrated else "sum of all operators")
        return (f"estimated {self.total_ms:.3f} ms ({how}), {self.conv_ms:.3f} ms "
                f"(convs only, {100 * self.conv_ms / self.operator_sum_ms:.0f}% of the sum); "
                f"{len(self.layers)} operators, {self.interpolated} interpolated")


def estimate_trace(trace: Trace, lut: Lut, strict: bool = False) -> Estimate:
    """The estimate of a traced network; a runtime table's rows are fused chains, so the
    trace is looked up as that runtime runs it (``profiler.fusion``)."""
    trace = runtime_trace(trace, lut.runtime)
    keys = [r.key for r in trace.layers]
    names = [r.name for r in trace.layers]
    weights = network_weight_bytes(keys, lut.meta.get("dtype", "fp32"))
    ms, exact = lut.lookup(keys, strict=strict, names=names, weight_bytes=weights)
    df = pd.DataFrame({"name": names, "op": [k.op for k in keys],
                       "c_in": [k.c_in for k in keys], "c_out": [k.c_out for k in keys],
                       "in_h": [k.in_h for k in keys], "in_w": [k.in_w for k in keys],
                       "ms": ms, "exact": exact})
    total = float(ms.sum())
    return Estimate(df, float(lut.in_network_ms(total, len(keys))),
                    float(ms[df["op"].map(is_conv).to_numpy(dtype=bool)].sum()), int((~exact).sum()),
                    total, lut.calibration is not None, lut.cold_share(weights))


def estimate(model: nn.Module, lut: Lut, input_size: "int | tuple[int, int]", in_channels: int = 3,
             strict: bool = False) -> Estimate:
    """Latency of ``model`` (pruned or not) at ``input_size`` according to ``lut``."""
    return estimate_trace(trace_model(model, input_size, in_channels), lut, strict)
