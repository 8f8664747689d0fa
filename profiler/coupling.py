"""Which operators' channel counts change together when filters are removed.

During the traced forward pass every tensor carries a *channel dimension* id.
A conv or linear layer starts a new one for its output; channel-wise ops and
depthwise convs pass their input's through; a residual addition (or any
element-wise op of equal-channel tensors, such as the multiply of a
squeeze-excitation block) merges the dimensions of its operands. Anything
that mixes channels in another way (``torch.cat``, a channel shuffle, a
reshape of C x H x W into features, a grouped conv, whose groups must stay
equal) freezes the dimensions involved: they are not prunable here.

Torch-Pruning's dependency graph answers the same question for whole modules
and is what removes channels physically; this tracker exists because the
latency model also needs the functional operators (inline additions,
activations, pools) that Torch-Pruning's groups do not name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from hwprune.profiler.calls import is_call

FIXED = 0  # the network input's channels and the classifier's outputs


def flatten_args(args: Sequence) -> list:
    """The arguments of a call with those inside lists and tuples (``torch.cat``'s) lifted out."""
    return [a for x in args for a in (x if isinstance(x, (list, tuple)) else [x])]


CONV = "conv2d"


def is_conv(op: str) -> bool:
    """A convolution, alone or with the epilogue a runtime fuses into it (``conv2d+bn+relu``,
    ``profiler.fusion``)."""
    return op == CONV or op.startswith(CONV + "+")


def is_depthwise(op: str, c_in: int, groups: int) -> bool:
    """A depthwise convolution, fused or not (a runtime table's keys are fused: a first
    version missed ``conv2d+bn+hardswish`` and shrank its channels but not its groups)."""
    return is_conv(op) and groups > 1 and groups == c_in


def is_scalar(v) -> bool:
    """A Python number or a one-element tensor: an operand that carries no channels."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) or \
        isinstance(v, torch.Tensor) and v.numel() == 1


class ChannelTracker:
    def __init__(self, net_input: torch.Tensor) -> None:
        self.parent: dict[int, int] = {FIXED: FIXED}
        self.frozen: set[int] = set()
        self._dim_of: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []  # ids stay unique while the tensors live
        self._next = 1
        self._tag(net_input, FIXED)

    def new(self) -> int:
        d, self._next = self._next, self._next + 1
        self.parent[d] = d
        return d

    def find(self, d: int) -> int:
        root = d
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[d] != root:
            self.parent[d], d = root, self.parent[d]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))  # FIXED (0) always stays the root
            self.parent[hi] = lo
            ra = lo
        return ra

    def _tag(self, t: torch.Tensor, d: int) -> None:
        self._dim_of[id(t)] = d
        self._keep.append(t)

    def dim(self, t: torch.Tensor) -> int:
        d = self._dim_of.get(id(t))
        if d is None:  # a tensor from nowhere (a constant, a buffer): not prunable
            d = self.new()
            self.frozen.add(d)
            self._tag(t, d)
        return self.find(d)

    def on_modelled(self, op: str, c_in: int, groups: int, args: Sequence, out) -> tuple[int, int]:
        if is_call(op):
            # A call keyed by its exact shapes (``profiler.calls``): no operand may change.
            return self._freeze([t for t in flatten_args(args)
                                 if isinstance(t, torch.Tensor) and t.dim() >= 2], out)
        if op in ("cat", "channel_shuffle", "sum", "softmax", "space_to_depth"):
            # Channels of the joined (or interleaved, regrouped) inputs map onto other
            # positions of the output: the latency model cannot follow them, so none is
            # prunable.
            return self._freeze(args[0] if op == "cat" else [args[0]], out)
        first, other = args[0], args[1] if len(args) > 1 else None
        if op == "mul" and is_scalar(first) and isinstance(other, torch.Tensor):
            first, other = other, first  # `scale * x`: the channels are x's
        d_in = self.dim(first)
        if op in ("add", "mul"):
            # a scalar operand (x * 0.17, x / 2, a learnable scale) carries no channels
            shared = isinstance(other, torch.Tensor) and not is_scalar(other)
            d_out = self.union(d_in, self.dim(other)) if shared else d_in
        elif op == "linear" or (op == "conv2d" and not is_depthwise(op, c_in, groups)):
            d_out = self.new()
            if op == "conv2d" and groups > 1:
                # A grouped conv needs the same channel count in every group, and
                # Torch-Pruning removes channels without regard to groups: not prunable.
                self.frozen.update((d_in, d_out))
        else:
            d_out = d_in
        if op == "conv2d" and not (len(args) > 1 and isinstance(args[1], nn.Parameter)):
            # F.conv2d with a fixed filter (TResNet's anti-aliasing blur, a buffer): nothing
            # Torch-Pruning would shrink along with the channels, so they stay.
            self.frozen.update((d_in, d_out))
        if isinstance(out, torch.Tensor):
            self._tag(out, d_out)
        return d_in, d_out

    def _freeze(self, inputs: Sequence[torch.Tensor], out) -> tuple[int, int]:
        """Freeze the inputs' dimensions and give ``out`` a new, frozen one."""
        for t in inputs:
            self.frozen.add(self.dim(t))
        d = self.new()
        self.frozen.add(d)
        if isinstance(out, torch.Tensor):
            self._tag(out, d)
        return d, d

    def on_other(self, args: Sequence, out) -> None:
        if isinstance(out, (list, tuple)):
            self._on_split(args, out)
            return
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return
        flat = flatten_args(args)
        tensors = [a for a in flat if isinstance(a, torch.Tensor) and a.dim() >= 2]
        same = [a for a in tensors if a.shape[1] == out.shape[1] and a.shape[1] > 1]
        if same:
            d = self.dim(same[0])
            for a in same[1:]:
                d = self.union(d, self.dim(a))
            self._tag(out, d)
        else:
            d = self.new()
            self.frozen.add(d)
            for a in tensors:
                self.frozen.add(self.dim(a))
            self._tag(out, d)

    def _on_split(self, args: Sequence, parts: Sequence) -> None:
        """``split``/``chunk``/``tensor_split``: pieces along another axis keep the input's
        channels; pieces along the channels have sizes written in the model's code (a
        pruned input would no longer split as the code says), so none of it is prunable."""
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        pieces = [p for p in parts if isinstance(p, torch.Tensor)]
        if src is None or src.dim() < 2 or not pieces or \
                any(p.dim() != src.dim() for p in pieces):
            return
        if all(p.shape[1] == src.shape[1] for p in pieces):
            d = self.dim(src)
            for p in pieces:
                self._tag(p, d)
            return
        self.frozen.add(self.dim(src))
        for p in pieces:
            d = self.new()
            self.frozen.add(d)
            self._tag(p, d)

    def frozen_roots(self) -> set[int]:
        return {self.find(d) for d in self.frozen} | {FIXED}


@dataclass(frozen=True)
class Dimension:
    """A set of channels that must be pruned together, and who sees them."""

    id: int
    channels: int
    producers: tuple[int, ...]   # layer indices whose c_out is this dimension
    consumers: tuple[int, ...]   # layer indices whose c_in is this dimension (convs, linear)
    passthrough: tuple[int, ...]  # channel-wise layers (BN, activations, adds, depthwise)


def all_producers(d: Dimension, layers: Sequence) -> tuple[int, ...]:
    """Every layer whose output channels are ``d``'s: its producers, and the convs and linear
    layers that map ``d`` onto itself (an EfficientNet block without expansion: its
    projection's output is added back to its input). Those count as passthrough, since
    both their sides shrink together, but Torch-Pruning prunes them as producers too."""
    own = tuple(i for i in d.passthrough if layers[i].key.op == "linear" or (
        layers[i].key.op == "conv2d" and not is_depthwise("conv2d", layers[i].key.c_in,
                                                            layers[i].key.groups)))
    return d.producers + own


def dimensions(layers: Sequence, frozen: set[int] | frozenset) -> list[Dimension]:
    """The prunable channel dimensions of a trace's layers, in order of first appearance."""
    found: dict[int, dict[str, list[int]]] = {}
    for i, rec in enumerate(layers):
        k = rec.key
        channelwise = rec.in_dim == rec.out_dim
        for d, role in ((rec.out_dim, "producers"), (rec.in_dim, "consumers")):
            if d < 0 or d in frozen:
                continue
            if channelwise:
                role = "passthrough"
            entry = found.setdefault(d, {"producers": [], "consumers": [], "passthrough": [],
                                         "channels": k.c_out if role == "producers" else k.c_in})
            if i not in entry[role]:
                entry[role].append(i)
    return [Dimension(d, e["channels"], tuple(e["producers"]), tuple(e["consumers"]),
                      tuple(e["passthrough"])) for d, e in found.items() if e["producers"]]
