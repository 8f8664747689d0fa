"""The key space of a model: which operators it runs at which shapes, and the scan grid.

A single forward pass at the given input size is recorded at the functional
level (a ``TorchFunctionMode``), so operators written inline in ``forward``
(``out += identity`` in ResNets, ``F.adaptive_avg_pool2d`` in MobileNetV2) are
seen as well as modules. Each call gets the name of the module that made it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from hwprune.errors import HwpruneError
from hwprune.sizes import Size, hw
from hwprune.profiler import calls
from hwprune.profiler.coupling import CONV, ChannelTracker, flatten_args, is_conv, is_scalar
from hwprune.zoo.models import set_training


ACTIVATIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "silu": "silu",
               "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "gelu": "gelu",
               "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "hardtanh": "hardtanh",
               "hardtanh_": "hardtanh", "leaky_relu": "leaky_relu",
               "leaky_relu_": "leaky_relu"}
ADDS = {"add": False, "__add__": False, "__radd__": False, "add_": True, "__iadd__": True}
# A subtraction of two same-shape tensors is the same element-wise pass as their sum (and
# couples their channels the same way): keyed as ``add``.
SUBS = {"sub": False, "__sub__": False, "subtract": False, "sub_": True, "__isub__": True}
_ADDS_AND_SUBS = {**ADDS, **SUBS}  # name -> in place
MULS = {"mul": False, "__mul__": False, "__rmul__": False, "mul_": True, "__imul__": True}
# Division by a scalar costs what a multiply by one does (x / 2, a mean of two heads).
DIVS = {"div": False, "__truediv__": False, "true_divide": False, "div_": True,
        "__itruediv__": True}
_IN_PLACE_NAMES = {"relu_", "sigmoid_", "hardtanh_", "leaky_relu_"}
# Functions that move no data worth timing (views, metadata); any other compute op the
# table does not model makes the trace refuse the model (``UnmodelledOpError``).
# ``contiguous`` of a non-contiguous tensor does copy: it is handled in ``_key_for``.
_IGNORED = {"flatten", "view", "reshape", "dropout", "contiguous", "size", "dim", "__get__",
            "__getitem__", "__setitem__", "__len__", "__bool__", "numel", "unsqueeze",
            "squeeze", "to", "float", "detach", "clone", "type", "__format__", "__eq__",
            "transpose", "permute", "swapaxes", "expand", "chunk", "split", "reshape_as",
            "view_as", "expand_as", "unflatten", "movedim", "narrow", "unbind"}


_MAY_COPY = {"contiguous", "reshape", "flatten", "reshape_as"}


class KeySpaceError(HwpruneError):
    """The model cannot be turned into a key space (no conv, no matching layer, ...)."""


class UnmodelledOpError(KeySpaceError):
    """The model runs compute operators the table has no kind for: an estimate that left
    them out would be wrong by their cost, so the model is refused instead."""


@dataclass(frozen=True, order=True)
class OpKey:
    """One row key of a LUT. Unused fields keep their defaults.

    conv2d uses every field; channel-wise ops (batch_norm2d, activations, add, mul,
    mean, pools) set c_in == c_out == channels; adaptive pools store their output size
    in kernel_h/kernel_w; linear has in_h == in_w == 0 (no spatial dims). ``mul``
    stores the spatial size of its smaller operand in kernel_h/kernel_w (1x1 for the
    channel scale of a squeeze-excitation block, 0x0 for a scalar: ``x * 0.17``, a
    learnable scalar scale, ``x / 2``); ``cat`` (along channels) the number
    of tensors joined in kernel_h; ``channel_shuffle`` its groups in kernel_h (not in
    ``groups``, which a channel-wise key's config leaves out); ``pad`` (zeros),
    ``pad_reflect`` and ``pad_replicate`` the rows and columns added in pad_h/pad_w;
    ``upsample_nearest`` and ``upsample_bilinear`` their integer scale in kernel_h/kernel_w.
    """

    op: str
    c_in: int
    c_out: int
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    dil_h: int = 1
    dil_w: int = 1
    groups: int = 1
    bias: bool = False
    inplace: bool = False
    in_h: int = 0
    in_w: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> bytes:
        """A stable hash of the key (file names of stored rows, shard assignment)."""
        return hashlib.sha1(json.dumps(self.as_dict(), sort_keys=True).encode()).digest()

    def config(self) -> tuple:
        """The key without its channel counts: what stays fixed under pruning."""
        d = asdict(self)
        for name in ("c_in", "c_out", "groups"):
            d.pop(name)
        return tuple(d.values())


KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OpKey))


@dataclass(frozen=True)
class LayerRecord:
    """One operator call of the traced forward pass."""

    name: str
    key: OpKey
    fixed_in: bool = False   # input is the network's input: c_in cannot be pruned
    fixed_out: bool = False  # a classifier's outputs: c_out cannot be pruned
    in_dim: int = -1         # channel dimension ids (profiler.coupling), -1 when untracked
    out_dim: int = -1
    # Tensor edges, for the runtimes' fusion of Conv+BN+activation (``profiler.fusion``): the
    # layers whose outputs this call read (-1: the network input or an untracked tensor),
    # and how many calls of any kind (views, the network's output included) read its output.
    inputs: tuple[int, ...] = ()
    uses: int = 0


@dataclass
class Trace:
    layers: list[LayerRecord]
    # (No "unmodelled" field: a trace refuses a model that runs compute ops the table has
    # no kind for, UnmodelledOpError, so every trace that exists is fully modelled.)
    frozen_dims: frozenset = frozenset()  # channel dimensions that cannot be pruned
    fused: bool = False  # conv chains joined as a runtime runs them (``profiler.fusion``)

    def filtered(self, patterns: Sequence[str]) -> "Trace":
        """Keep layers whose name matches any glob pattern (all when no pattern)."""
        if not patterns:
            return self
        kept = [r for r in self.layers if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
        if not kept:
            raise KeySpaceError(f"no layer matches --layers {' '.join(patterns)}")
        return Trace(kept, self.frozen_dims, self.fused)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv_key(args, kwargs) -> OpKey:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args), **kwargs)
    x, w = a["input"], a["weight"]
    kh, kw = w.shape[2], w.shape[3]
    stride, dil = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1))
    pad = a.get("padding", 0)
    if isinstance(pad, str):  # 'valid' or 'same' (stride 1 only, as torch requires)
        pad = (0, 0) if pad == "valid" else (dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2)
    pad = _pair(pad)
    return OpKey(CONV, x.shape[1], w.shape[0], kh, kw, *stride, *pad, *dil,
                 groups=int(a.get("groups", 1)), bias=a.get("bias") is not None,
                 in_h=x.shape[2], in_w=x.shape[3])


def _channel_key(op: str, x: torch.Tensor, inplace: bool = False, **kw) -> OpKey:
    h, w = (x.shape[2], x.shape[3]) if x.dim() == 4 else (0, 0)
    return OpKey(op, x.shape[1], x.shape[1], inplace=inplace, in_h=h, in_w=w, **kw)


def _pool_key(op: str, args, kwargs) -> OpKey:
    names = ("input", "kernel_size", "stride", "padding", "dilation")
    a = dict(zip(names, args), **kwargs)
    k = _pair(a["kernel_size"])
    s = _pair(a.get("stride") or k)
    kw = dict(kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1])
    kw.update(zip(("pad_h", "pad_w"), _pair(a.get("padding", 0))))
    if op == "max_pool2d":
        kw.update(zip(("dil_h", "dil_w"), _pair(a.get("dilation", 1))))
    return _channel_key(op, a["input"], **kw)


def _key_for(fname: str, args, kwargs) -> OpKey | None:
    """The key of one functional call, or None when the table does not model it."""
    if fname == "conv2d":
        return _conv_key(args, kwargs)
    if fname == "batch_norm":
        return _channel_key("batch_norm2d", args[0])
    if fname in ACTIVATIONS:
        # F.relu(x, True), F.hardtanh(x, 0., 6., True): the only bool argument is `inplace`.
        inplace = fname in _IN_PLACE_NAMES or bool(kwargs.get("inplace")) \
            or any(a is True for a in args[1:])
        return _channel_key(ACTIVATIONS[fname], args[0], inplace=inplace)
    if fname in _ADDS_AND_SUBS:
        x, y = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape \
                and x.dim() in (2, 4):
            return _channel_key("add", x, inplace=_ADDS_AND_SUBS[fname])
        # ``x + 3`` (a hard sigmoid written out), ``x + bias`` of (N, C, 1, 1) or (C, 1, 1):
        # the same element-wise pass over x as a multiply by such an operand, keyed as it
        return _mul_key(args, kwargs, _ADDS_AND_SUBS[fname])
    if fname == "layer_norm":
        return _layer_norm_key(args, kwargs)
    if fname in ("max_pool2d", "_max_pool2d", "avg_pool2d"):
        return _pool_key(fname.lstrip("_"), args, kwargs)
    if fname == "adaptive_avg_pool2d":
        out = _pair(args[1] if len(args) > 1 else kwargs["output_size"])
        return _channel_key("adaptive_avg_pool2d", args[0], kernel_h=out[0], kernel_w=out[1])
    if fname == "linear":
        # Of (N, C) vectors only: on tokens or a channels-last map, (N, ..., C), the cost
        # grows with the positions, which the key has no field for; keyed as a vector's,
        # the estimate would leave out all but one of them.
        w, b = args[1], args[2] if len(args) > 2 else kwargs.get("bias")
        if args[0].dim() != 2:
            return None
        return OpKey("linear", w.shape[1], w.shape[0], bias=b is not None)
    if fname in MULS:
        return _mul_key(args, kwargs, MULS[fname])
    if fname in DIVS:  # only by a scalar: x / y by a tensor is not modelled
        return _scalar_mul_key(args[0], args[1] if len(args) > 1 else kwargs.get("other"),
                               DIVS[fname])
    if fname == "cat":
        return _cat_key(args, kwargs)
    if fname == "stack":
        return _stack_key(args, kwargs)
    if fname == "sum":
        return _sum_key(args, kwargs)
    if fname == "softmax":
        return _softmax_key(args, kwargs)
    if fname == "mean" and args[0].dim() == 4:  # global average pooling written as x.mean
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if isinstance(dims, (list, tuple)) and {d % 4 for d in dims} == {2, 3}:
            return _channel_key("mean", args[0])
        return None
    if fname == "contiguous":
        return _shuffle_key(args[0]) or _space_to_depth_key(args[0])
    if fname == "pad":
        return _pad_key(args, kwargs)
    if fname == "interpolate":
        return _upsample_key(args, kwargs)
    return None


UPSAMPLE_MODES = {"nearest": "upsample_nearest", "bilinear": "upsample_bilinear"}


def _upsample_key(args, kwargs) -> OpKey | None:
    """F.interpolate (nn.Upsample) of a 4-D tensor by whole factors, nearest or bilinear
    (HRNet's and FPN-style fusions): other modes and fractional sizes are not modelled."""
    names = ("input", "size", "scale_factor", "mode", "align_corners")
    a = dict(zip(names, args), **kwargs)
    x, op = a["input"], UPSAMPLE_MODES.get(a.get("mode") or "nearest")
    if op is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    out = _pair(a["size"]) if a.get("size") is not None else None
    if out is None:
        f = _pair(a.get("scale_factor") or 0)
        out = (x.shape[2] * f[0], x.shape[3] * f[1])
    if any(o % i or o < i for o, i in zip(out, x.shape[2:])) or \
            any(float(o) != int(o) for o in out):
        return None
    return _channel_key(op, x, kernel_h=int(out[0]) // x.shape[2],
                        kernel_w=int(out[1]) // x.shape[3])


PAD_MODES = {"constant": "pad", "reflect": "pad_reflect", "replicate": "pad_replicate"}


def _pad_key(args, kwargs) -> OpKey | None:
    """F.pad of a 4-D tensor on its height and width ('same' padding of TF-ported nets,
    the reflection before a blur pool): its cost is the padded copy, so the key holds the
    rows and columns added (how they split between the sides does not change it)."""
    names = ("input", "pad", "mode", "value")
    a = dict(zip(names, args), **kwargs)
    x, pads, op = a["input"], list(a["pad"]), PAD_MODES.get(a.get("mode") or "constant")
    if op is None or x.dim() != 4 or len(pads) not in (2, 4):
        return None
    pads += [0] * (4 - len(pads))
    pad_h, pad_w = pads[2] + pads[3], pads[0] + pads[1]
    # A negative side crops (NASNet's (-1, 1) shift of a path by one pixel): the copy of
    # what is left is the cost, as for any other pad of the same output size.
    if (op != "pad" and min(pads) < 0) or x.shape[2] + pad_h < 1 or x.shape[3] + pad_w < 1:
        return None
    return _channel_key(op, x, pad_h=pad_h, pad_w=pad_w)


def _layer_norm_key(args, kwargs) -> OpKey | None:
    """F.layer_norm of (N, C) vectors over C (a classifier head's norm, as in
    InceptionNeXt's MLP head); over the channels of a feature map it is not modelled."""
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    a = dict(zip(names, args), **kwargs)
    x, shape = a["input"], tuple(a["normalized_shape"])
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or shape != (x.shape[1],):
        return None
    return OpKey("layer_norm", x.shape[1], x.shape[1], bias=a.get("bias") is not None)


def _scalar_mul_key(x, y, inplace: bool) -> OpKey | None:
    """``x * s`` (either order) or ``x / s`` of a 2-D or 4-D tensor by a scalar: kernel 0x0."""
    if isinstance(y, torch.Tensor) and y.dim() in (2, 4) and is_scalar(x) and not inplace:
        x, y = y, x
    if not (isinstance(x, torch.Tensor) and x.dim() in (2, 4) and x.numel() > 1 and is_scalar(y)):
        return None
    return _channel_key("mul", x, inplace=inplace, kernel_h=0, kernel_w=0)


def _mul_key(args, kwargs, inplace: bool) -> OpKey | None:
    """An element-wise multiply of same-channel tensors: equal shapes, or one of them a
    per-channel scale (N, C, 1, 1), as in squeeze-excitation, or (C, 1, 1), a learnable
    layer scale, or a scalar. Others are not modelled."""
    x, y = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    scalar = _scalar_mul_key(x, y, inplace)
    if scalar is not None:
        return scalar
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == y.dim() == 5 \
            and x.shape[:3] == y.shape[:3]:
        # a stack of K maps of C channels weighted per map and channel (split attention):
        # the same pass as K * C channels scaled
        x, y = x.flatten(1, 2), y.flatten(1, 2)
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 3 \
            and y.dim() == 4 and not inplace:
        x, y = y, x
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 4 \
            and y.dim() == 3 and tuple(y.shape) == (x.shape[1], 1, 1):
        y = y.unsqueeze(0)  # a learnable per-channel scale (C, 1, 1): FastViT's layer scale
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.dim() != y.dim() \
            or x.dim() not in (2, 4) or x.shape[:2] != y.shape[:2]:
        return None
    big, small = (x, y) if x.numel() >= y.numel() else (y, x)
    if x.dim() == 2 or small.shape == big.shape:
        return _channel_key("mul", big, inplace=inplace,
                            **({} if x.dim() == 2 else dict(kernel_h=big.shape[2],
                                                             kernel_w=big.shape[3])))
    if tuple(small.shape[2:]) != (1, 1) or (inplace and big is not x):
        return None
    return _channel_key("mul", big, inplace=inplace)  # kernel 1x1: the broadcast scale


def _cat_key(args, kwargs) -> OpKey | None:
    """torch.cat of 4-D tensors along channels; the cost is the copy of every input."""
    parts = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not parts or dim not in (1, -3) or \
            not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in parts) or \
            len({tuple(t.shape[2:]) for t in parts}) != 1:
        return None
    c = sum(int(t.shape[1]) for t in parts)
    return OpKey("cat", c, c, kernel_h=len(parts), in_h=parts[0].shape[2], in_w=parts[0].shape[3])


def _stack_key(args, kwargs) -> OpKey | None:
    """torch.stack of same-shape 4-D tensors on a new axis 1 (SKNet's paths): the same copy
    as their concatenation along the channels, keyed as that ``cat``."""
    parts = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not parts or dim != 1 or \
            not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in parts) or \
            len({tuple(t.shape) for t in parts}) != 1:
        return None
    c = len(parts) * int(parts[0].shape[1])
    return OpKey("cat", c, c, kernel_h=len(parts), in_h=parts[0].shape[2], in_w=parts[0].shape[3])


def _sum_key(args, kwargs) -> OpKey | None:
    """``x.sum(1)`` of a (N, K, C, H, W) stack of K feature maps (split attention's radix
    groups, SKNet's paths): K - 1 adds in one pass. c_in and c_out hold the K * C channels
    read (as a ``cat`` key holds all it joins), kernel_h the K."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if isinstance(dim, (list, tuple)) and len(dim) == 1:
        dim = dim[0]
    if x.dim() != 5 or dim not in (1, -4) or kwargs.get("keepdim") or \
            (len(args) > 2 and args[2]):
        return None
    k, c = int(x.shape[1]), int(x.shape[2])
    return OpKey("sum", k * c, k * c, kernel_h=k, in_h=x.shape[3], in_w=x.shape[4])


def _softmax_key(args, kwargs) -> OpKey | None:
    """A softmax over axis 1 of a 3- to 5-D tensor (split attention's weights over its
    radix groups or paths): ``kernel_h`` holds the axis' length, c_in the elements per
    batch item. A softmax over a last axis (attention's scores) is not modelled."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not 3 <= x.dim() <= 5 or dim not in (1, 1 - x.dim()):
        return None
    n = int(x[0].numel())
    return OpKey("softmax", n, n, kernel_h=int(x.shape[1]))


def _space_to_depth_key(x: torch.Tensor) -> OpKey | None:
    """TResNet's space-to-depth, x.view(n, c, h/b, b, w/b, b).permute(0, 3, 5, 1, 2, 4)
    .contiguous(): the copy is the cost. c_in and c_out hold the C channels read (the
    b * b * C written follow), kernel_h and kernel_w the block b."""
    if x.dim() != 6 or x.is_contiguous() or x.shape[1] != x.shape[2] or \
            not x.permute(0, 3, 4, 1, 5, 2).is_contiguous():
        return None
    b, c = int(x.shape[1]), int(x.shape[3])
    return OpKey("space_to_depth", c, c, kernel_h=b, kernel_w=b,
                 in_h=x.shape[4] * b, in_w=x.shape[5] * b)


def _shuffle_key(x: torch.Tensor) -> OpKey | None:
    """ShuffleNet's channel shuffle, x.view(n, g, c/g, h, w).transpose(1, 2).contiguous():
    the copy made by ``contiguous`` is the whole cost (the views move no data)."""
    if x.dim() != 5 or x.is_contiguous() or not x.transpose(1, 2).is_contiguous():
        return None
    c = x.shape[1] * x.shape[2]
    return OpKey("channel_shuffle", c, c, kernel_h=x.shape[2], in_h=x.shape[3], in_w=x.shape[4])


class _Recorder(TorchFunctionMode):
    def __init__(self, leaves: set[str], net_input: torch.Tensor, all_calls: bool = False) -> None:
        super().__init__()
        self.leaves, self.net_input = leaves, net_input
        self.channels = ChannelTracker(net_input)
        self.stack: list[str] = []
        self.layers: list[LayerRecord] = []
        self.unmodelled: Counter = Counter()
        self.unmodelled_at: dict[str, str] = {}  # the first layer running each of them
        self.calls: list[tuple[int, str, dict, int]] = []  # (layer, function, signature, index)
        self.candidates: list[dict | None] = []
        self.all_calls = all_calls  # keep every candidate's signature
        self._count: Counter = Counter()
        self.producer: dict[int, int] = {}  # id(tensor) -> index of the layer that wrote it
        self.uses: Counter = Counter()
        self._alive: list[torch.Tensor] = []  # ids stay unique while the tensors live

    def _sources(self, args) -> tuple[int, ...]:
        flat = flatten_args(args)
        return tuple(self.producer.get(id(a), -1) for a in flat if isinstance(a, torch.Tensor))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        fname = getattr(func, "__name__", str(func))
        key = None
        if args and (isinstance(args[0], torch.Tensor) or fname in ("cat", "stack")):
            key = _key_for(fname, args, kwargs)
        out = func(*args, **kwargs)
        # contiguous() of a non-contiguous tensor copies it, and so may a reshape or flatten
        # of one (attention's patches): a reshape that views at batch 1 (its size-1 axis
        # lets it) can copy at batch 2. Keyed as a call, unless a known pattern: replayed
        # in the memory order of each batch, it costs what it costs there.
        copies = fname in _MAY_COPY and key is None and isinstance(args[0], torch.Tensor) \
            and not args[0].is_contiguous()
        sources = self._sources(args)
        if isinstance(out, (torch.Tensor, list, tuple)):  # a size() or dim() reads no data
            self.uses.update(i for i in sources if i >= 0)
        operands = list(args)
        # Calls that may cost something, counted in order: the same call of a pass at
        # another batch has the same index (``_mark_batch_axes``), whichever got a kind.
        candidate = isinstance(out, torch.Tensor) and out.dim() >= 2 and \
            (fname not in _IGNORED or fname in _MAY_COPY) and not fname.startswith("_")
        index = len(self.candidates)
        unkeyed = key is None and candidate and (copies or fname not in _MAY_COPY)
        sig = calls.signature(func, args, kwargs) if unkeyed or (candidate and self.all_calls) \
            else None
        if candidate:
            self.candidates.append(sig)
        if unkeyed:
            # no kind for it: keyed as the exact call when it can be replayed
            if sig is None:
                self.unmodelled[fname] += 1
                self.unmodelled_at.setdefault(fname, self.stack[-1] if self.stack else "")
            else:
                c = max(1, int(out.shape[1]))
                key = OpKey(calls.op_name(sig), c, c)
                self.calls.append((len(self.layers), fname, sig, index))
                operands += list(kwargs.values())
        if key is not None:
            owner = self.stack[-1] if self.stack else ""
            # A leaf module's call takes its name; ops inline in a forward() get a suffix.
            short = fname if calls.is_call(key.op) else key.op
            base = owner if owner in self.leaves else f"{owner}.{short}".lstrip(".")
            n = self._count[base]
            self._count[base] += 1
            fixed_in = args[0] is self.net_input
            d_in, d_out = self.channels.on_modelled(key.op, key.c_in, key.groups, operands, out)
            self.layers.append(LayerRecord(base if n == 0 else f"{base}#{n}", key, fixed_in,
                                           in_dim=d_in, out_dim=d_out, inputs=sources))
            if isinstance(out, torch.Tensor):
                self.producer[id(out)] = len(self.layers) - 1
                self._alive.append(out)
        else:
            self.channels.on_other(args, out)
        return out


def _record(model: nn.Module, x: torch.Tensor,
            all_calls: bool = False) -> tuple[_Recorder, object]:
    """One forward pass of ``model`` on ``x`` under a recorder."""
    names = {id(m): n for n, m in model.named_modules()}
    leaves = {n for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    rec = _Recorder(leaves, x, all_calls)

    def pre(mod, _inp):
        rec.stack.append(names.get(id(mod), type(mod).__name__))

    def post(mod, _inp, _out):
        rec.stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    was_training = model.training
    set_training(model, False)
    try:
        with torch.no_grad(), rec:
            out = model(x)
    except RuntimeError as exc:  # torch's shape errors: the input is not the one it takes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KeySpaceError(f"the model fails on a {'x'.join(map(str, x.shape))} input "
                            f"({first}): give the input size it takes (--input-size)") from None
    finally:
        for h in handles:
            h.remove()
        set_training(model, was_training)
    return rec, out


def _mark_batch_axes(rec: _Recorder, model: nn.Module, x: torch.Tensor) -> None:
    """Key each call (``profiler.calls``) with the batch axis of its operands, found by the
    same pass at batch 2; a call whose shapes follow the batch in no such way is
    unmodelled after all."""
    if not rec.calls:
        return
    twice, _ = _record(model, torch.cat([x, x]), all_calls=True)
    same = len(twice.candidates) == len(rec.candidates)
    for i, fname, sig, index in rec.calls:
        other = twice.candidates[index] if same else None
        marked = calls.with_batch(sig, other) if other else None
        if marked is None:
            rec.unmodelled[fname] += 1
            rec.unmodelled_at.setdefault(fname, rec.layers[i].name)
            continue
        rec.layers[i] = replace(rec.layers[i], key=replace(rec.layers[i].key,
                                                           op=calls.op_name(marked)))


def trace_model(model: nn.Module, input_size: Size, in_channels: int = 3) -> Trace:
    """Run one batch-1 forward pass at ``input_size`` (a side, or (h, w)) and record every
    modelled operator."""
    x = torch.randn(1, in_channels, *hw(input_size))
    rec, out = _record(model, x)
    _mark_batch_axes(rec, model, x)
    layers = rec.layers
    tracker = rec.channels
    if isinstance(out, torch.Tensor) and id(out) in rec.producer:  # the output is read too
        rec.uses[rec.producer[id(out)]] += 1
    if isinstance(out, torch.Tensor):  # whatever the network outputs cannot shrink
        tracker.frozen.add(tracker.dim(out))
    # A linear layer producing the network's output is the classifier: its outputs are fixed.
    if isinstance(out, torch.Tensor) and layers and layers[-1].key.op == "linear":
        layers[-1] = replace(layers[-1], fixed_out=True)
    if not any(r.key.op == CONV for r in layers):
        raise KeySpaceError("the model has no Conv2d layer: nothing for a conv latency table to hold")
    if rec.unmodelled:
        ops = rec.unmodelled.most_common()
        named = ", ".join(f"{op} x{n} (first in {rec.unmodelled_at[op] or 'the top level'})"
                          for op, n in ops[:4])
        more = f" and {len(ops) - 4} more ({', '.join(op for op, _ in ops[4:])})" \
            if len(ops) > 4 else ""
        raise UnmodelledOpError(f"the model runs operators the LUT has no kind for, so no "
                                f"estimate could include their cost: {named}{more}")
    frozen = frozenset(tracker.frozen_roots())
    # Channels of a frozen dimension never change (a concatenation, a channel shuffle, a
    # grouped conv, a flatten into features): such a layer's grid keeps them, like the
    # network input's and the classifier's, so no key is measured that no variant can use.
    resolved = []
    for r in layers:
        d_in, d_out = tracker.find(r.in_dim), tracker.find(r.out_dim)
        resolved.append(replace(r, in_dim=d_in, out_dim=d_out, fixed_in=r.fixed_in or d_in in frozen,
                                fixed_out=r.fixed_out or d_out in frozen,
                                uses=rec.uses[len(resolved)]))
    return Trace(resolved, frozen)


def conv_out_hw(key: OpKey) -> tuple[int, int]:
    """Output height and width of a conv (or pool) key."""
    return ((key.in_h + 2 * key.pad_h - key.dil_h * (key.kernel_h - 1) - 1) // key.stride_h + 1,
            (key.in_w + 2 * key.pad_w - key.dil_w * (key.kernel_w - 1) - 1) // key.stride_w + 1)


def macs(key: OpKey) -> int:
    """Multiply-accumulates of one conv or linear key (0 for other operators)."""
    if key.op == "linear":
        return key.c_in * key.c_out
    if not is_conv(key.op):
        return 0
    out_h, out_w = conv_out_hw(key)
    return key.c_out * (key.c_in // key.groups) * key.kernel_h * key.kernel_w * out_h * out_w


def channel_grid(c: int, step: int) -> list[int]:
    """Channel counts c, c-step, c-2*step, ... > 0, ascending.

    Counted down from the original so that removing whole groups of ``step``
    filters always lands on a measured key (for c=24, step 16: [8, 24]).
    """
    if step < 1:
        raise KeySpaceError(f"step must be >= 1, got {step}")
    return sorted(range(c, 0, -step))


def _multiples(values: Iterable[int], g: int, cap: int) -> list[int]:
    return sorted({min(cap, max(g, -(-v // g) * g)) for v in values})


def grid_for(rec: LayerRecord, step: int) -> list[OpKey]:
    """Every key this layer can take when its channels are pruned at ``step``."""
    k = rec.key
    ins = [k.c_in] if rec.fixed_in else channel_grid(k.c_in, step)
    outs = [k.c_out] if rec.fixed_out else channel_grid(k.c_out, step)
    if is_conv(k.op) and k.groups > 1:
        if k.groups == k.c_in and k.c_out % k.c_in == 0:  # depthwise: one channel per group
            mult = k.c_out // k.c_in
            return [replace(k, c_in=c, c_out=mult * c, groups=c) for c in ins]
        g = k.groups  # grouped: groups fixed, both sides stay multiples of g
        return [replace(k, c_in=ci, c_out=co) for ci in _multiples(ins, g, k.c_in)
                for co in _multiples(outs, g, k.c_out)]
    if is_conv(k.op) or k.op == "linear":
        return [replace(k, c_in=ci, c_out=co) for ci in ins for co in outs]
    return [replace(k, c_in=c, c_out=c) for c in ins]


def scan_keys(trace: Trace, step: int) -> list[OpKey]:
    """The deduplicated, sorted scan grid of all layers of ``trace``."""
    keys: set[OpKey] = set()
    for rec in trace.layers:
        keys.update(grid_for(rec, step))
    return sorted(keys)


def unique_layers(trace: Trace) -> dict[OpKey, list[str]]:
    """Identical configs deduplicated: each distinct key with the layers that have it."""
    out: dict[OpKey, list[str]] = {}
    for rec in trace.layers:
        out.setdefault(rec.key, []).append(rec.name)
    return out
