"""How much each group of filters matters: the error term (first-order Taylor on gates, or
weight magnitude) and its combination with a cost term (LUT latency or FLOPs saving).

Units and normalisation (paper Eq. 10, ``I = I_err + eta * I_lat``):

* ``I_err`` of a group is the sum over its filters of ``(dL/dgate * gate)^2`` accumulated
  over minibatches (gate = 1), in squared loss units. Its scale depends on the loss, the
  batch and the number of minibatches, so it is divided by its mean over the candidate
  groups of the step.
* ``I_lat`` is ``LAT(W without s) - LAT(W)`` from the LUT, in ms (negative: removing the
  group saves time). Its scale depends on the device, so it is divided by the mean
  absolute saving over the candidates.

With both terms at mean 1, ``eta`` says how many mean error units one mean latency
saving is worth; ``eta = 0`` is plain Taylor pruning. The paper's ``eta = 0.01`` was set
for raw values on a V100 and has no meaning in these units.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from hwprune.pruner.groups import PrunableDim


class GateTaylor:
    """Gates (value 1) after the BatchNorms of each dimension; accumulates (grad x gate)^2.

    One gate vector per dimension multiplies the outputs of every gate site of that
    dimension, so its gradient is the loss's sensitivity to scaling those channels
    everywhere at once: exactly what removing them does.
    """

    def __init__(self, model: nn.Module, dims: list[PrunableDim]) -> None:
        self.model, self.dims = model, dims
        self.gates: list[torch.Tensor] = []
        self.scores: list[np.ndarray] = []
        self.batches = 0
        self._handles: list = []

    @contextmanager
    def installed(self) -> Iterator["GateTaylor"]:
        self.install()
        try:
            yield self
        finally:
            self.remove()

    def install(self) -> None:
        """(Re)create gates for the current channel counts; scores start from zero."""
        self.remove()
        modules = dict(self.model.named_modules())
        device = next(self.model.parameters()).device
        self.gates = [torch.ones(d.channels, device=device, requires_grad=True)
                      for d in self.dims]
        self.scores = [np.zeros(d.channels) for d in self.dims]
        self.batches = 0
        for gate, d in zip(self.gates, self.dims):
            for site in d.gate_sites:
                self._handles.append(modules[site].register_forward_hook(_gate_hook(gate)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def accumulate(self) -> None:
        """Add this minibatch's (grad x gate)^2 per channel; call after ``backward()``."""
        for j, g in enumerate(self.gates):
            if g.grad is not None:
                self.scores[j] += ((g.grad * g).detach() ** 2).cpu().double().numpy()
                g.grad = None
        self.batches += 1

    def all_reduce(self) -> None:
        """Sum the scores over ``torch.distributed`` ranks, so every rank picks the same groups."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and self.scores:
            device = self.gates[0].device if self.gates else torch.device("cpu")
            flat = torch.from_numpy(np.concatenate(self.scores)).to(device)
            dist.all_reduce(flat)
            self.scores = list(np.split(flat.cpu().numpy(), np.cumsum([len(s) for s in self.scores])[:-1]))


def _gate_hook(gate: torch.Tensor):
    def hook(_module, _inputs, out):
        return out * gate.view(1, -1, *([1] * (out.dim() - 2)))
    return hook


def magnitude_scores(model: nn.Module, dims: list[PrunableDim]) -> list[np.ndarray]:
    """Squared L2 norm of each filter, summed over a dimension's producers (a data-free baseline)."""
    modules = dict(model.named_modules())
    out = []
    for d in dims:
        total = np.zeros(d.channels)
        for p in d.producers:
            w = modules[p].weight.detach()
            total += (w.reshape(w.shape[0], -1).double() ** 2).sum(1).cpu().numpy()
        out.append(total)
    return out


def lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest channel scores (ties broken by index, so it is repeatable)."""
    return np.argsort(scores, kind="stable")[:k]


def group_error(scores: list[np.ndarray], group_size: int) -> np.ndarray:
    """Error term of each dimension's candidate group: its ``group_size`` least important
    channels. NaN where removing a group would empty the dimension."""
    return np.array([np.sort(s)[:group_size].sum() if len(s) > group_size else np.nan
                     for s in scores])


def combine(err: np.ndarray, cost: np.ndarray | None, eta: float) -> np.ndarray:
    """``err / mean(err) + eta * cost / mean(|cost|)`` over the valid candidates (see module doc)."""
    valid = np.isfinite(err) if cost is None else np.isfinite(err) & np.isfinite(cost)
    out = np.full(len(err), np.nan)
    if not valid.any():
        return out
    e = err[valid]
    scale = e.mean()
    out[valid] = e / scale if scale > 0 else 0.0
    if cost is not None and eta != 0.0:
        c = cost[valid]
        c_scale = np.abs(c).mean()
        if c_scale > 0:
            out[valid] += eta * c / c_scale
    return out


__all__ = ["GateTaylor", "magnitude_scores", "lowest", "group_error", "combine"]
