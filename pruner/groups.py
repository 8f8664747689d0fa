"""Which channels are pruned together, found by Torch-Pruning's dependency graph, and how they
are removed physically.

A *dimension* is one Torch-Pruning group: the convs whose outputs are tied together
(by residual additions, depthwise convs and the BatchNorms that follow them) and
every layer that consumes those channels. The pruner removes channels of a
dimension in groups of ``group_size`` filters. The same dimension, as the LUT's
latency model sees it (``profiler.coupling``), is matched by the names of its
producing convs, so the latency term of a group is read for exactly the layers
Torch-Pruning will shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from hwprune.errors import HwpruneError
from hwprune.profiler.coupling import Dimension, all_producers, dimensions
from hwprune.profiler.keyspace import Trace
from hwprune.zoo.models import CouplingError, dependency_graph


class GroupError(HwpruneError):
    """The model's channel groups cannot be matched or pruned."""


@dataclass
class PrunableDim:
    """One prunable dimension: its producing convs, where its gate sits, its channel count."""

    root: str                   # a producing conv/linear (Torch-Pruning's group root)
    producers: tuple[str, ...]  # every non-depthwise conv/linear whose outputs are these channels
    gate_sites: tuple[str, ...]  # BatchNorms of these channels (or the producers if none)
    channels: int
    lut_dim: int | None = None  # index into the latency model's dimensions


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def output_layers(model: nn.Module, trace: Trace) -> list[nn.Module]:
    """Layers whose output channels are never pruned: the classifier, and those whose
    outputs the latency model holds fixed (``profiler.coupling``: feeding a concatenation,
    a channel shuffle, a grouped conv or a flatten into features). Torch-Pruning could cut
    some of these, but the LUT could not then price the result."""
    modules = dict(model.named_modules())
    # A layer keyed as an exact call (a linear over tokens, a conv1d: ``profiler.calls``)
    # keeps its shapes, so its outputs stay too.
    return [modules[r.name] for r in trace.layers
            if r.fixed_out and r.name in modules and isinstance(modules[r.name], _WEIGHTED)]


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    try:
        return dependency_graph(model, example)
    except CouplingError as exc:
        raise GroupError(str(exc)) from None


def find_dims(model: nn.Module, graph: tp.DependencyGraph, trace: Trace) -> list[PrunableDim]:
    """Every prunable dimension of ``model``, matched to the trace's latency dimensions."""
    names = {m: n for n, m in model.named_modules()}
    lut_dims = dimensions(trace.layers, trace.frozen_dims)
    by_producer: dict[str, int] = {}
    for j, d in enumerate(lut_dims):
        for i in all_producers(d, trace.layers):
            by_producer[trace.layers[i].name] = j
    found: list[PrunableDim] = []
    for group in graph.get_all_groups(ignored_layers=output_layers(model, trace)):
        producers, bns, channels = [], [], None
        for dep, idxs in group:
            m = dep.target.module
            if not graph.is_out_channel_pruning_fn(dep.handler) or m not in names:
                continue
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not _is_depthwise(m):
                producers.append(names[m])
                channels = len(idxs)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                bns.append(names[m])
        if not producers:
            continue
        matched = {by_producer.get(p) for p in producers}
        lut_dim = matched.pop() if len(matched) == 1 else None
        found.append(PrunableDim(producers[0], tuple(producers), tuple(bns or producers),
                                 int(channels), lut_dim))
    return found


def check_matches(dims: list[PrunableDim], trace: Trace) -> None:
    """Raise unless every dimension's producers equal those of one latency dimension."""
    lut_dims: list[Dimension] = dimensions(trace.layers, trace.frozen_dims)
    for d in dims:
        if d.lut_dim is None:
            raise GroupError(f"channels of {d.root} have no single counterpart in the LUT's "
                             f"latency model (producers {list(d.producers)})")
        mine = {trace.layers[i].name for i in all_producers(lut_dims[d.lut_dim], trace.layers)}
        if mine != set(d.producers):
            raise GroupError(f"Torch-Pruning ties {sorted(d.producers)} together but the latency "
                             f"model ties {sorted(mine)}: cannot score {d.root}")


def _pruning_fn(m: nn.Module):
    return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels


def remove_channels(model: nn.Module, graph: tp.DependencyGraph, dim: PrunableDim,
                    idxs: list[int]) -> None:
    """Physically remove channels ``idxs`` of ``dim`` from every layer tied to them.

    Parameters are replaced by smaller ones; their ``.grad`` is sliced along with them,
    which ``pruner.optim`` uses to carry optimiser state across the removal.
    """
    if not idxs:
        return
    if len(idxs) >= dim.channels:
        raise GroupError(f"refusing to empty {dim.root}: {len(idxs)} of {dim.channels} channels")
    root = dict(model.named_modules())[dim.root]
    group = graph.get_pruning_group(root, _pruning_fn(root), idxs=sorted(int(i) for i in idxs))
    group.prune()
    dim.channels -= len(idxs)


def out_channels(model: nn.Module, dims: list[PrunableDim]) -> dict[str, int]:
    """Output channels of every producing layer: the spec a pruned checkpoint records."""
    modules = dict(model.named_modules())
    spec = {}
    for d in dims:
        for p in d.producers:
            m = modules[p]
            spec[p] = int(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
    return spec


__all__ = ["GroupError", "PrunableDim", "build_graph", "find_dims", "check_matches",
           "remove_channels", "out_channels", "output_layers"]
