"""``prune --snap``: after pruning, round every dimension's channel count up to the top of
its latency step, where the LUT says the extra filters cost nothing.

A device runs channels in tiles (``pruner.plan``'s staircase), so a dimension pruned to the
bottom of a step can get some of its filters back without the estimate rising: capacity
kept for free. The removed filters' weights are gone from the student, so growing back
takes them from the teacher (the filters removed last first: they ranked highest among
the removed) and zeroes their columns in every layer that reads them. The grown network
then computes exactly what the pruned one did (the new channels reach nothing yet), and
fine-tuning decides what they become: the Net2Net way of widening a trained network.

Counts are snapped one dimension at a time, each keeping the largest count whose LUT
estimate (with the dimensions before it already snapped) is not above the estimate so
far, so the network's estimate never rises.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from hwprune.luts import LatencyModel
from hwprune.pruner.groups import (GroupError, PrunableDim, _pruning_fn, build_graph, find_dims,
                           remove_channels)
from hwprune.profiler.keyspace import Trace


@dataclass
class SnapResult:
    estimated_ms_before: float
    estimated_ms_after: float
    filters_before: int          # prunable filters (every producer's outputs)
    filters_after: int
    grown: dict[str, tuple[int, int]] = field(default_factory=dict)  # root: (before, after)

    @property
    def filters_added(self) -> int:
        return self.filters_after - self.filters_before

    def as_dict(self) -> dict:
        return {**asdict(self), "filters_added": self.filters_added}


def snap_counts(latency: LatencyModel, dims: list[PrunableDim], original: dict[str, int],
                group: int) -> dict[str, int]:
    """The snapped channel count of every dimension that grows (root: count). ``latency``
    is left in the snapped state."""
    now, out = latency.total_ms, {}
    for d in dims:
        best = 0
        for m in range(1, (original[d.root] - d.channels) // group + 1):
            # LatencyModel.remove of a negative count grows the dimension; undone at once
            t = latency.remove(d.lut_dim, -m * group)
            latency.remove(d.lut_dim, m * group)
            if t <= now:
                best = m
        if best:
            now = latency.remove(d.lut_dim, -best * group)
            out[d.root] = d.channels + best * group
    return out


def _added_positions(kept: np.ndarray, added: list[int]) -> tuple[list[int], list[int]]:
    """The grown dimension's channels (original indices, sorted: removals keep the order)
    and the positions in it of the ``added`` ones."""
    both = np.sort(np.concatenate([kept, np.asarray(added, dtype=kept.dtype)]))
    return [int(c) for c in both], [int(np.searchsorted(both, a)) for a in added]


def _dims_by_root(model: nn.Module, example: torch.Tensor, trace: Trace
                  ) -> tuple[tp.DependencyGraph, dict[str, PrunableDim]]:
    graph = build_graph(model, example)
    return graph, {d.root: d for d in find_dims(model, graph, trace)}


def grow(student: nn.Module, teacher: nn.Module, trace: Trace, example: torch.Tensor,
         kept: dict[str, np.ndarray], removed: dict[str, list[int]],
         counts: dict[str, int]) -> nn.Module:
    """A copy of the teacher cut to the student's channels plus the grown ones: the student's
    weights where it has them, the teacher's for the grown filters, zero where a layer reads
    a grown channel (so the result computes what ``student`` does). ``kept`` and
    ``removed``: each dimension's original channel indices, kept and removed in order."""
    big = copy.deepcopy(teacher)
    for prm in big.parameters():  # Torch-Pruning leaves frozen layers (the teacher's) out
        prm.requires_grad_(True)
    graph, dims = _dims_by_root(big, example, trace)
    positions = {}
    for root, d in dims.items():
        added = removed[root][::-1][:counts[root] - len(kept[root])] if root in counts else []
        keep, positions[root] = _added_positions(kept[root], added)
        remove_channels(big, graph, d, sorted(set(range(d.channels)) - set(keep)))
    # Which of the grown model's elements hold the student's: fill a copy with each
    # element's own flat index, cut the grown channels out as Torch-Pruning would, and read
    # what is left (float64 counts exactly to 2^53).
    probe = copy.deepcopy(big).double()
    for t in list(probe.parameters()) + list(probe.buffers()):
        if t.is_floating_point():
            t.data = torch.arange(t.numel(), dtype=torch.float64, device=t.device).view_as(t)
    pgraph, pdims = _dims_by_root(probe, example.double(), trace)
    for root, pos in positions.items():
        remove_channels(probe, pgraph, pdims[root], pos)
    small, index = student.state_dict(), probe.state_dict()
    with torch.no_grad():
        for name, t in big.state_dict().items():
            if small[name].shape != index[name].shape:
                raise GroupError(f"snap: {name} of the student is {tuple(small[name].shape)}, "
                                 f"the grown model less its new channels "
                                 f"{tuple(index[name].shape)}")
            if not t.is_floating_point():
                t.copy_(small[name])
                continue
            t.view(-1)[index[name].view(-1).long()] = small[name].reshape(-1).to(t.dtype)
        for root, pos in positions.items():
            if pos:
                _zero_readers(graph, dict(big.named_modules())[root], pos)
    return big.train(student.training)


def _zero_readers(graph: tp.DependencyGraph, root: nn.Module, pos: list[int]) -> None:
    """Zero the input columns of the grown channels ``pos`` in every layer that reads them."""
    for dep, idxs in graph.get_pruning_group(root, _pruning_fn(root), idxs=pos):
        m = dep.target.module
        if graph.is_out_channel_pruning_fn(dep.handler):
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            m.weight[:, list(idxs)] = 0
        elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels:
            continue  # depthwise: its filter of a channel is that channel's producer
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            raise GroupError(f"snap: {type(m).__name__} with groups={m.groups} reads a grown "
                             f"channel; cannot keep the network's function")


def snap_line(res: SnapResult) -> str:
    if not res.grown:
        return "snap: no dimension can grow without raising the LUT estimate"
    dims = ", ".join(f"{r} {a}->{b}" for r, (a, b) in res.grown.items())
    return (f"snap: {res.filters_added} filters kept for free ({res.filters_before} -> "
            f"{res.filters_after}); LUT estimate {res.estimated_ms_before:.4f} -> "
            f"{res.estimated_ms_after:.4f} ms; {dims}")


__all__ = ["SnapResult", "snap_counts", "grow", "snap_line"]
