"""Build one LUT key as a runnable operator: the module a network would call, with its input."""

from __future__ import annotations

import copy
import itertools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwprune.profiler import calls
from hwprune.profiler.keyspace import PAD_MODES, UPSAMPLE_MODES, OpKey

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

_ACT_MODULES: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda ip: nn.ReLU(inplace=ip),
    "relu6": lambda ip: nn.ReLU6(inplace=ip),
    "hardtanh": lambda ip: nn.Hardtanh(0.0, 6.0, inplace=ip),
    "silu": lambda ip: nn.SiLU(inplace=ip),
    "hardswish": lambda ip: nn.Hardswish(inplace=ip),
    "hardsigmoid": lambda ip: nn.Hardsigmoid(inplace=ip),
    "gelu": lambda ip: nn.GELU(),
    "sigmoid": lambda ip: nn.Sigmoid(),
    "leaky_relu": lambda ip: nn.LeakyReLU(inplace=ip),
}

# Ops without a module: built as the tensor expressions a network writes inline.
_FUNCTIONAL = {"add", "mul", "cat", "mean", "channel_shuffle", "pad", "pad_reflect",
               "pad_replicate", "upsample_nearest", "upsample_bilinear", "sum", "softmax",
               "space_to_depth"}
KNOWN_OPS = {"conv2d", "batch_norm2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
             "linear", "layer_norm", *_ACT_MODULES, *_FUNCTIONAL}


def _module_for(key: OpKey) -> nn.Module:
    op = key.op
    if op == "conv2d":
        return nn.Conv2d(key.c_in, key.c_out, (key.kernel_h, key.kernel_w),
                         (key.stride_h, key.stride_w), (key.pad_h, key.pad_w),
                         (key.dil_h, key.dil_w), key.groups, key.bias)
    if op == "batch_norm2d":  # over (N, C) vectors too (a BatchNorm1d head: EfficientViT)
        return nn.BatchNorm2d(key.c_in) if key.in_h else nn.BatchNorm1d(key.c_in)
    if op in _ACT_MODULES:
        return _ACT_MODULES[op](key.inplace)
    if op == "max_pool2d":
        return nn.MaxPool2d((key.kernel_h, key.kernel_w), (key.stride_h, key.stride_w),
                            (key.pad_h, key.pad_w), (key.dil_h, key.dil_w))
    if op == "avg_pool2d":
        return nn.AvgPool2d((key.kernel_h, key.kernel_w), (key.stride_h, key.stride_w),
                            (key.pad_h, key.pad_w))
    if op == "adaptive_avg_pool2d":
        return nn.AdaptiveAvgPool2d((key.kernel_h, key.kernel_w))
    if op == "linear":
        return nn.Linear(key.c_in, key.c_out, key.bias)
    if op == "layer_norm":
        return nn.LayerNorm(key.c_in, bias=key.bias)
    raise ValueError(f"unknown operator '{op}' (known: {', '.join(sorted(KNOWN_OPS))})")


def _functional_op(key: OpKey, x: torch.Tensor, fmt) -> Callable[[], torch.Tensor]:
    """The inline expression of ``key`` on input ``x``, as the traced network wrote it."""
    if key.op == "add":
        # Small addend: repeated in-place adds must not drift towards inf or denormals.
        y = (torch.randn_like(x) * 1e-3).contiguous(memory_format=fmt)
        if key.inplace:
            return lambda: x.add_(y)
        return lambda: x + y
    if key.op == "mul":
        # The other operand: same shape, or a per-channel scale (kernel 1x1, squeeze-
        # excitation). Close to 1, so repeated in-place products neither blow up nor vanish.
        # kernel 0x0: a scalar (x * 0.17, a learnable scale of one element, x / 2).
        shape = () if key.kernel_h == 0 else x.shape if x.dim() == 2 else \
            (*x.shape[:2], key.kernel_h, key.kernel_w)
        y = (1 + 1e-3 * torch.randn(shape, device=x.device)).to(x.dtype)
        y = y.contiguous(memory_format=fmt) if y.dim() == 4 else y
        if key.inplace:
            return lambda: x.mul_(y)
        return lambda: y * x
    if key.op == "cat":
        # The cost is copying every input once; how the channels are split among the
        # key.kernel_h inputs hardly matters, so they are split evenly.
        parts = [p.contiguous(memory_format=fmt) for p in torch.split(x, cat_sizes(key), dim=1)]
        return lambda: torch.cat(parts, 1)
    if key.op == "mean":
        return lambda: x.mean((2, 3))
    if key.op.startswith("pad"):
        sides = (key.pad_w // 2, key.pad_w - key.pad_w // 2,
                 key.pad_h // 2, key.pad_h - key.pad_h // 2)
        mode = next(m for m, op in PAD_MODES.items() if op == key.op)
        return lambda: F.pad(x, sides, mode)
    if key.op.startswith("upsample"):
        mode = next(m for m, op in UPSAMPLE_MODES.items() if op == key.op)
        scale = (float(key.kernel_h), float(key.kernel_w))
        return lambda: F.interpolate(x, scale_factor=scale, mode=mode)
    if key.op == "sum":  # of K maps of C channels, stacked: x holds the K * C channels
        b, _, h, w = x.shape
        return lambda: x.reshape(b, key.kernel_h, key.c_in // key.kernel_h, h, w).sum(1)
    if key.op == "softmax":
        return lambda: x.reshape(x.shape[0], key.kernel_h, -1).softmax(1)
    if key.op == "space_to_depth":
        b, c, h, w = x.shape
        k = key.kernel_h
        return lambda: x.reshape(b, c, h // k, k, w // k, k).permute(0, 3, 5, 1, 2, 4) \
            .contiguous()
    if key.op == "channel_shuffle":
        b, c, h, w = x.shape
        g = key.kernel_h  # torchvision's channel_shuffle, views included
        return lambda: x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
    raise ValueError(f"unknown operator '{key.op}' (known: {', '.join(sorted(KNOWN_OPS))})")


def cat_sizes(key: OpKey) -> list[int]:
    """The channels of each tensor a ``cat`` key joins: split evenly (the cost is copying
    every input once; how the channels are split among them hardly matters)."""
    n, c = key.kernel_h, key.c_in
    return [c // n + (1 if i < c % n else 0) for i in range(n)]


def input_shape(key: OpKey, batch: int) -> tuple[int, ...]:
    if key.in_h == 0 and key.in_w == 0:
        return (batch, key.c_in)
    return (batch, key.c_in, key.in_h, key.in_w)


# Copies are deep copies of the module, built per key: beyond a few hundred, building them
# costs more than timing the key. A key whose weights are smaller than cold_bytes / 512
# therefore keeps part of its copies in the cache (`cold_shortfall`, shown by `lut info`).
MAX_WEIGHT_COPIES = 512
_WEIGHTED = ("conv2d", "linear", "batch_norm2d")


def weight_bytes(key: OpKey, dtype: str) -> int:
    """Bytes of weights (parameters and BN statistics) ``key``'s module reads on each call."""
    # Counted from the shape, not by building the module: `lut info` asks for every row.
    if key.op == "conv2d":
        params = key.c_out * (key.c_in // key.groups) * key.kernel_h * key.kernel_w
    elif key.op == "linear":
        params = key.c_out * key.c_in
    elif key.op == "batch_norm2d":
        # weight, bias, running mean and running variance: eval-mode BN reads all four
        return 4 * key.c_in * torch.finfo(DTYPES[dtype]).bits // 8
    else:
        return 0
    return (params + (key.c_out if key.bias else 0)) * torch.finfo(DTYPES[dtype]).bits // 8


def network_weight_bytes(keys, dtype: str = "fp32") -> int:
    """Bytes of weights a network of these keys reads in one forward pass. A fused chain
    (``conv2d+bn+...``) holds its conv's weights and a bias: the runtime folded the BN."""
    total = 0
    for key in keys:
        if key.op.startswith("conv2d+"):
            key = OpKey(**{**key.as_dict(), "op": "conv2d", "bias": True})
        total += weight_bytes(key, dtype)
    return total


def weight_copies(key: OpKey, dtype: str, cold_bytes: int) -> int:
    """How many copies of the key's weights to rotate so they no longer fit in ``cold_bytes``."""
    if cold_bytes <= 0 or key.op not in _WEIGHTED:
        return 1
    nbytes = max(1, weight_bytes(key, dtype))
    return int(min(MAX_WEIGHT_COPIES, max(1, -(-cold_bytes // nbytes))))


def cold_shortfall(key: OpKey, dtype: str, cold_bytes: int,
                   cap: int = MAX_WEIGHT_COPIES) -> bool:
    """True when ``key`` has weights but even ``cap`` copies of them stay under ``cold_bytes``:
    timed as cold, it still reads them partly from the cache."""
    nbytes = weight_bytes(key, dtype)
    if cold_bytes <= 0 or nbytes <= 0:
        return False
    return min(cap, -(-cold_bytes // nbytes)) * nbytes < cold_bytes


def build_op(key: OpKey, batch: int = 1, dtype: str = "fp32", device: str = "cpu",
             channels_last: bool = False, copies: int = 1) -> Callable[[], torch.Tensor]:
    """A zero-argument callable that runs ``key`` once, as the network would.

    The caller should run it under ``torch.inference_mode()``. In-place ops
    (``out += identity``, ``ReLU(inplace=True)``) stay in place, because the
    allocation an out-of-place op makes is part of what it costs. With
    ``copies > 1`` each call uses the next of that many copies of the weights
    (the input stays the same): a network whose weights exceed the cache
    reads each layer's weights from memory, while its input was just written.
    """
    tdtype = DTYPES[dtype]
    if calls.is_call(key.op):  # keyed as the exact call, operands of its recorded shapes
        return calls.build_call(key.op, batch, tdtype, device)
    fmt = torch.channels_last if channels_last and key.in_h else torch.contiguous_format
    x = torch.randn(input_shape(key, batch), device=device).to(dtype=tdtype, memory_format=fmt)
    if key.op in _FUNCTIONAL:
        return _functional_op(key, x, fmt)
    module = _module_for(key).to(device=device, dtype=tdtype).eval()
    if fmt is torch.channels_last:
        module = module.to(memory_format=fmt)
    if copies <= 1:
        return lambda: module(x)
    modules = [module] + [copy.deepcopy(module) for _ in range(copies - 1)]
    turn = itertools.cycle(modules)
    return lambda: next(turn)(x)
