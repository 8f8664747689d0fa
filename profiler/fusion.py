"""The trace as a deployment runtime runs it: Conv+BatchNorm(+residual add)(+activation)
chains as one operator.

ONNX Runtime and OpenVINO fold an inference BatchNorm into the convolution before it and
run the activation (and a residual addition) as the convolution's epilogue, so in those
runtimes such a chain costs about what the convolution alone does, and a table that
charged the BatchNorm, the ReLU and the add separately would count work the runtime never
does. A runtime table therefore holds one row per *chain*: the convolution's key with the
chain's ops in its ``op`` ("conv2d+bn+add+relu"), timed as that chain exported to ONNX
and run by the runtime (``profiler.runtime_ops``), which fuses whatever it fuses.

A chain follows the tensor edges of the trace (``LayerRecord.inputs``/``uses``): it only
takes an op that is the sole reader of the chain's output so far, in the order
conv, [bn], [add], [activation]: the order in which the runtimes fold them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hwprune.profiler import calls
from hwprune.profiler.keyspace import ACTIVATIONS, CONV, KeySpaceError, LayerRecord, Trace, is_conv

_ORDER = {"bn": 1, "add": 2, "act": 3}
_ACTS = set(ACTIVATIONS.values())


def chain_ops(op: str) -> list[str]:
    """The ops after the convolution in a fused key's ``op`` (``[]`` for a plain one)."""
    return op.split("+")[1:] if is_conv(op) else []


def _stage(op: str) -> str | None:
    if op == "batch_norm2d":
        return "bn"
    if op == "add":
        return "add"
    return "act" if op in _ACTS else None


def _chain(layers: list[LayerRecord], start: int, readers: dict[int, list[int]],
           taken: set[int]) -> list[int]:
    """Indices of the ops the runtime folds into the convolution at ``start``."""
    chain, cur, last = [], start, 0
    while layers[cur].uses == 1 and len(readers.get(cur, ())) == 1:
        j = readers[cur][0]
        stage = _stage(layers[j].key.op)
        if j in taken or stage is None or _ORDER[stage] <= last:
            break
        chain.append(j)
        cur, last = j, _ORDER[stage]
    return chain


def fuse_trace(trace: Trace) -> Trace:
    """The trace with each Conv(+BN)(+add)(+activation) chain as one layer: the conv's
    record (name, channel dimensions), its key's op naming the chain. Other layers stay."""
    if trace.fused:
        return trace
    layers = trace.layers
    if layers and not any(r.inputs for r in layers):
        raise ValueError("this trace has no tensor edges (made before they were recorded)")
    readers: dict[int, list[int]] = {}
    for j, r in enumerate(layers):
        for i in dict.fromkeys(r.inputs):
            if i >= 0:
                readers.setdefault(i, []).append(j)
    taken: set[int] = set()
    fused: dict[int, LayerRecord] = {}
    for i, r in enumerate(layers):
        if r.key.op != CONV:
            continue
        chain = _chain(layers, i, readers, taken)
        taken.update(chain)
        names = [_stage(layers[j].key.op) for j in chain]
        ops = [layers[j].key.op if s == "act" else s for j, s in zip(chain, names)]
        if ops:
            fused[i] = replace(r, key=replace(r.key, op="+".join([CONV, *ops])))
    kept = [fused.get(i, r) for i, r in enumerate(layers) if i not in taken]
    return Trace(kept, trace.frozen_dims, fused=True)


def runtime_trace(trace: Trace, runtime: str) -> Trace:
    """The layers a table of ``runtime`` has rows for: the trace itself for torch.

    A call keyed by its exact shapes (``profiler.calls``: attention, group norm, ...) is
    replayed through torch only; a runtime table has no ONNX form for it, so such a model
    is refused for runtimes, naming the calls."""
    if runtime == "torch":
        return trace
    found = Counter(calls.kind(r.key.op) for r in trace.layers if calls.is_call(r.key.op))
    if found:
        named = ", ".join(f"{k.removeprefix(calls.PREFIX)} x{n}" for k, n in found.most_common(4))
        raise KeySpaceError(f"--runtime {runtime}: the model runs operators keyed only as torch "
                            f"calls ({named}{', ...' if len(found) > 4 else ''}), which a "
                            f"runtime table has no form for; profile with --runtime torch")
    return fuse_trace(trace)


__all__ = ["is_conv", "chain_ops", "fuse_trace", "runtime_trace"]
