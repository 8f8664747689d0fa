"""The pruner's latency question, answered fast: what does removing k channels of a dimension save?

A dimension (``profiler.coupling``) is a set of channels pruned together: the
convs producing it lose k output channels, the convs and linear layers
consuming it lose k input channels, and the channel-wise ops in between
(BatchNorm, activations, residual adds, depthwise convs) shrink with it.
The delta of one dimension is the sum of the LUT changes of all those keys.
All dimensions are answered with one batched lookup.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Protocol, Sequence

import numpy as np

from hwprune.luts.lookup import Lut
from hwprune.profiler.coupling import Dimension, dimensions, is_depthwise
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import OpKey, Trace
from hwprune.profiler.ops import network_weight_bytes
from hwprune.profiler.table import LutError


def shrink(key: OpKey, k: int, side: str) -> OpKey:
    """``key`` after removing ``k`` channels on its input, output or (channel-wise) both."""
    if side == "out":
        return replace(key, c_out=key.c_out - k)
    if side == "in":
        return replace(key, c_in=key.c_in - k)
    if is_depthwise(key.op, key.c_in, key.groups):
        mult = key.c_out // key.c_in
        return replace(key, c_in=key.c_in - k, c_out=mult * (key.c_in - k), groups=key.c_in - k)
    return replace(key, c_in=key.c_in - k, c_out=key.c_out - k)


class LatencyTable(Protocol):
    """What ``LatencyModel`` asks of a table: a ``Lut``, or ``pruner.cost.MacsTable``."""

    source: str

    @property
    def meta(self) -> dict: ...

    @property
    def calibration(self) -> dict | None: ...

    def in_network_ms(self, operator_sum_ms: float | np.ndarray,
                      n_ops: int) -> float | np.ndarray: ...

    def lookup(self, keys: Iterable[OpKey], strict: bool = False,
               names: Sequence[str] | None = None,
               weight_bytes: float | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def is_sparse(lut: Lut | LatencyTable) -> bool:
    """A table of listed keys only (``profile --for-validation``), not a model's grid."""
    sources = (lut.meta or {}).get("sources") or []
    return bool(sources) and all(s.get("keys") for s in sources)


class LatencyModel:
    """Current channel counts of a network and their LUT latency, with a batched delta query."""

    def __init__(self, trace: Trace, lut: Lut | LatencyTable, strict: bool = False,
                 allow_sparse: bool = False) -> None:
        if is_sparse(lut) and allow_sparse:
            strict = True  # exact keys only: the validation variants' own
        elif is_sparse(lut):
            # Between such sparse keys interpolation would silently span whole grids.
            raise LutError(f"LUT {lut.source} holds only the keys of validation variants "
                           f"(`profile --for-validation`); pruning needs the model's whole "
                           f"grid: profile it without --for-validation")
        self.lut, self.strict = lut, strict
        torch_dims = [d.id for d in dimensions(trace.layers, trace.frozen_dims)]
        # A runtime table's rows are fused chains (profiler.fusion); the chains keep their
        # conv's channel dimensions, in the same order, so dimension j stays dimension j.
        trace = runtime_trace(trace, getattr(lut, "runtime", "torch"))
        self.names = [r.name for r in trace.layers]
        self.keys = [r.key for r in trace.layers]
        self.dims: list[Dimension] = dimensions(trace.layers, trace.frozen_dims)
        if [d.id for d in self.dims] != torch_dims:
            raise LutError("the runtime's fused operators change the model's channel "
                           "dimensions: this model cannot be pruned against a runtime table")
        self.channels = np.array([d.channels for d in self.dims])
        self._dtype = (lut.meta or {}).get("dtype", "fp32")
        self.layer_ms, _ = lut.lookup(self.keys, strict, self.names, self._weights())
        # Flattened (dimension, layer, side) triples, so one lookup answers every dimension.
        self._dim_of, self._layer, self._side = [], [], []
        for j, d in enumerate(self.dims):
            for side, layers in (("out", d.producers), ("in", d.consumers),
                                 ("both", d.passthrough)):
                for i in layers:
                    self._dim_of.append(j)
                    self._layer.append(i)
                    self._side.append(side)
        self._dim_of = np.asarray(self._dim_of)
        self._layer = np.asarray(self._layer)

    def _weights(self) -> int:
        """The network's weight bytes now: a hot/cold table blends by them (Lut.cold_share)."""
        return network_weight_bytes(self.keys, self._dtype)

    @property
    def total_ms(self) -> float:
        """The network's estimate (in-network calibrated when the LUT carries a calibration)."""
        return float(self.lut.in_network_ms(float(self.layer_ms.sum()), len(self.keys)))

    @property
    def slope(self) -> float:
        """The calibration's slope (1 without one): what an operator-sum change is worth."""
        cal = self.lut.calibration
        return float(cal["slope"]) if cal else 1.0

    def layers_of(self, dim: int) -> list[int]:
        """The layers (indices into ``keys``) that dimension ``dim`` changes."""
        return sorted({int(i) for i in self._layer[self._dim_of == dim]})

    def delta_ms(self, k: int = 16) -> np.ndarray:
        """Latency change (ms, negative = saved) of removing ``k`` channels from each dimension.

        NaN where the dimension has ``k`` channels or fewer (a layer is never emptied).
        """
        ok = self.channels[self._dim_of] > k
        idx = np.flatnonzero(ok)
        new = [shrink(self.keys[self._layer[t]], k, self._side[t]) for t in idx]
        new_ms, _ = self.lut.lookup(new, self.strict,
                                    [self.names[self._layer[t]] for t in idx], self._weights())
        change = np.zeros(len(self._dim_of))
        change[idx] = new_ms - self.layer_ms[self._layer[idx]]
        # Pruning never removes an operator, so only the calibration's slope applies.
        out = self.slope * np.bincount(self._dim_of, weights=change, minlength=len(self.dims))
        out[self.channels <= k] = np.nan
        return out

    def remove_many(self, cuts: dict[int, int]) -> float:
        """Remove ``cuts[dim]`` channels from each dimension at once, then look every layer
        up once (a table of listed keys holds the end state, not the states between)."""
        for dim, k in cuts.items():
            if self.channels[dim] <= k:
                raise ValueError(f"dimension {dim} has {self.channels[dim]} channels: "
                                 f"cannot remove {k}")
        for dim, k in cuts.items():
            for t in np.flatnonzero(self._dim_of == dim):
                i = self._layer[t]
                self.keys[i] = shrink(self.keys[i], k, self._side[t])
            self.channels[dim] -= k
        self.layer_ms, _ = self.lut.lookup(self.keys, self.strict, self.names, self._weights())
        return self.total_ms

    def remove(self, dim: int, k: int = 16) -> float:
        """Apply the removal of ``k`` channels of dimension ``dim``; returns the new total.
        A negative ``k`` grows the dimension back (``pruner.snap``)."""
        if self.channels[dim] <= k:
            raise ValueError(f"dimension {dim} has {self.channels[dim]} channels: cannot remove {k}")
        for t in np.flatnonzero(self._dim_of == dim):
            i = self._layer[t]
            self.keys[i] = shrink(self.keys[i], k, self._side[t])
        touched = self.layers_of(dim)
        if getattr(self.lut, "cold_share", lambda _: 1.0)(self._weights()) < 1.0:
            touched = list(range(len(self.keys)))  # the blend moved for every layer
        ms, _ = self.lut.lookup([self.keys[i] for i in touched], self.strict,
                                [self.names[i] for i in touched], self._weights())
        self.layer_ms[touched] = ms
        self.channels[dim] -= k
        return self.total_ms
