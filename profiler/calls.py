"""Operators the table has no kind for, keyed as the exact call: function and operand shapes.

Attention blocks (``matmul``, a softmax over scores, ``scaled_dot_product_attention``,
``layer_norm`` and ``linear`` over tokens), ``group_norm``, ``conv1d``, ``unfold`` and the
like have no parameterised kind in the table. Such a call is recorded with everything
that determines its cost: the torch function it called, the shape, dtype class and
memory order of every tensor operand, and its other arguments. The key is one row,
timed by calling the same function on random operands of those shapes, and the
channel tracker (``profiler.coupling``) freezes every channel dimension the call
touches, so no pruned variant changes its shapes: its cost is a fixed term of every
estimate, measured like any other row, never left out.

Which axis of an operand grows with the batch is found by tracing at batches 1 and 2
(``with_batch``): attention folds windows or heads into axis 0, a position bias has no
batch axis at all. A call whose shapes change with the batch in any other way (or whose
other arguments do) is not keyed, and the model is refused as before.

Replaying a key only ever calls one of torch's own overridable functions
(``torch.overrides.get_overridable_functions``), looked up by name: a table file
cannot name anything else to run.
"""

from __future__ import annotations

import functools
import json
from typing import Callable

import torch

PREFIX = "call:"
_FLOAT, _INT, _BOOL = "f", "i", "b"


@functools.lru_cache(maxsize=1)
def _functions() -> tuple[dict[str, Callable], dict[Callable, str]]:
    """torch's overridable functions by qualified name ("Tensor.matmul", "F.layer_norm")."""
    spaces = {torch: "torch", torch.functional: "torch.functional",
              torch.nn.functional: "F", torch.Tensor: "Tensor", torch.linalg: "torch.linalg",
              torch.fft: "torch.fft", torch.special: "torch.special"}
    by_name: dict[str, Callable] = {}
    by_func: dict[Callable, str] = {}
    for space, funcs in torch.overrides.get_overridable_functions().items():
        prefix = spaces.get(space)
        if prefix is None:
            continue
        for f in funcs:
            name = getattr(f, "__name__", None)
            if not name:
                continue
            by_name.setdefault(f"{prefix}.{name}", f)
            try:
                by_func.setdefault(f, f"{prefix}.{name}")
            except TypeError:  # unhashable (properties): never a call worth keying
                pass
    return by_name, by_func


def is_call(op: str) -> bool:
    return op.startswith(PREFIX)


def kind(op: str) -> str:
    """The short name of a call key ("call:Tensor.matmul"); other ops unchanged."""
    return op.split(" ", 1)[0] if is_call(op) else op


def _order(t: torch.Tensor) -> list[int]:
    """Axes from the outermost in memory to the innermost (a transposed operand's order)."""
    return sorted(range(t.dim()), key=lambda a: (-t.stride(a), -a))


def _spec(v):
    """A JSON description of one argument, or raise TypeError for one that cannot be replayed."""
    if isinstance(v, torch.Tensor):
        cls = _BOOL if v.dtype == torch.bool else _FLOAT if v.is_floating_point() else _INT
        if v.is_complex():
            raise TypeError("complex tensor")
        spec = {"t": list(v.shape), "d": cls}
        if v.dim() > 1 and _order(v) != list(range(v.dim())):
            spec["o"] = _order(v)
        return spec
    if v is None or isinstance(v, (bool, int, float, str)):
        return {"v": v}
    if isinstance(v, torch.dtype):
        return {"dt": str(v).removeprefix("torch.")}
    if isinstance(v, (list, tuple)):  # a torch.Size too
        return {"l": [_spec(x) for x in v], "tu": isinstance(v, tuple)}
    raise TypeError(type(v).__name__)


def signature(func: Callable, args, kwargs) -> dict | None:
    """The replayable description of one call, or None when it cannot be replayed."""
    name = _functions()[1].get(func)
    if name is None:
        return None
    try:
        return {"fn": name, "args": [_spec(a) for a in args],
                "kwargs": {k: _spec(v) for k, v in sorted(kwargs.items())}}
    except TypeError:
        return None


class _Differs(Exception):
    pass


def _merge(a: dict, b: dict) -> dict:
    """Argument spec ``a`` (batch 1) with its batch axes marked from ``b`` (batch 2)."""
    if "t" in a:
        if "t" not in b or a["d"] != b["d"] or len(a["t"]) != len(b["t"]):
            raise _Differs
        grew = [i for i, (x, y) in enumerate(zip(a["t"], b["t"])) if x != y]
        if len(grew) > 1 or any(b["t"][i] != 2 * a["t"][i] for i in grew):
            raise _Differs
        out = dict(a, **({"b": grew[0]} if grew else {}))
        if b.get("o"):  # memory order at batch 2 and more: size-1 axes leave it open at 1
            out["o2"] = b["o"]
        return out
    if "l" in a:
        if "l" not in b or len(a["l"]) != len(b["l"]) or a.get("tu") != b.get("tu"):
            raise _Differs
        return {**a, "l": [_merge(x, y) for x, y in zip(a["l"], b["l"])]}
    if a == b:
        return a
    x, y = a.get("v"), b.get("v")
    if type(x) is int and type(y) is int and x > 0 and y == 2 * x:
        return {**a, "bv": True}  # a count of images: XCiT's pos.repeat(B, 1, 1, 1)
    raise _Differs


def with_batch(one: dict, two: dict) -> dict | None:
    """``one`` (traced at batch 1) with the batch axis of each tensor operand marked, from
    the same call traced at batch 2: the one axis that doubled, or none; an integer
    argument that doubled is a count of images. None when anything else differs (other
    than the memory order, which views of size-1 axes decide differently at batch 1:
    both are kept)."""
    if one["fn"] != two["fn"] or list(one["kwargs"]) != list(two["kwargs"]) or \
            len(one["args"]) != len(two["args"]):
        return None
    try:
        return {"fn": one["fn"],
                "args": [_merge(a, b) for a, b in zip(one["args"], two["args"])],
                "kwargs": {k: _merge(v, two["kwargs"][k]) for k, v in one["kwargs"].items()}}
    except _Differs:
        return None


def op_name(sig: dict) -> str:
    """The key's ``op``: the prefix, the function, then the whole description."""
    return f"{PREFIX}{sig['fn']} {json.dumps(sig, separators=(',', ':'), sort_keys=True)}"


def parse(op: str) -> dict:
    if not is_call(op) or " " not in op:
        raise ValueError(f"not a call key: {op[:80]}")
    return json.loads(op.split(" ", 1)[1])


def _operand(spec, batch: int, dtype: torch.dtype, device: str):
    if "t" in spec:
        shape = [n * batch if i == spec.get("b") else n for i, n in enumerate(spec["t"])]
        order = spec.get("o2" if batch > 1 else "o") or list(range(len(shape)))
        dense = [shape[a] for a in order]
        if spec["d"] == _FLOAT:
            t = torch.randn(dense, device=device, dtype=dtype)
        else:  # indices and masks: zeros are valid wherever an index or a mask is
            t = torch.zeros(dense, device=device,
                            dtype=torch.bool if spec["d"] == _BOOL else torch.long)
        return t.permute([order.index(a) for a in range(len(shape))])
    if "l" in spec:
        items = [_operand(s, batch, dtype, device) for s in spec["l"]]
        return tuple(items) if spec.get("tu") else items
    if "dt" in spec:
        return getattr(torch, spec["dt"])
    return spec["v"] * batch if spec.get("bv") else spec["v"]


def build_call(op: str, batch: int, dtype: torch.dtype, device: str) -> Callable[[], object]:
    """A zero-argument callable running the recorded call on random operands of its shapes
    at ``batch`` (float operands in ``dtype``)."""
    sig = parse(op)
    func = _functions()[0].get(sig["fn"])
    if func is None:
        raise ValueError(f"{sig['fn']} is not one of torch's overridable functions")
    args = [_operand(s, batch, dtype, device) for s in sig["args"]]
    kwargs = {k: _operand(s, batch, dtype, device) for k, s in sig["kwargs"].items()}
    return lambda: func(*args, **kwargs)
