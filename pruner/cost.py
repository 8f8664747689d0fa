"""The cost term of a group: what removing it saves, in LUT milliseconds or in MACs.

Both answer through ``luts.LatencyModel``: for FLOPs the "table" is the MAC count of
each key, so the same batched delta query and coupling serve both criteria.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from hwprune.luts import LatencyModel, Lut, macs
from hwprune.profiler.keyspace import OpKey, Trace


class MacsTable:
    """A stand-in for a LUT whose 'latency' of a key is its multiply-accumulate count.

    It answers everything ``LatencyModel`` asks of a table (``luts.delta.LatencyTable``):
    no run metadata, and no in-network calibration, since MACs add up exactly.
    """

    source = "MAC counts"
    calibration: dict | None = None

    @property
    def meta(self) -> dict:
        return {}  # no sources: never a sparse --for-validation table

    def in_network_ms(self, operator_sum_ms: float | np.ndarray,
                      n_ops: int) -> float | np.ndarray:
        return operator_sum_ms

    def lookup(self, keys: Iterable[OpKey], strict: bool = False,
               names: Sequence[str] | None = None,
               weight_bytes: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([float(macs(k)) for k in keys])
        return values, np.ones(len(values), dtype=bool)


def cost_model(criterion: str, trace: Trace, lut: Lut | None) -> LatencyModel | None:
    """The model of the criterion's cost term (None for criteria without one)."""
    if criterion == "flops-aware":
        return LatencyModel(trace, MacsTable())
    if lut is not None:
        return LatencyModel(trace, lut)
    return None


__all__ = ["MacsTable", "cost_model"]
