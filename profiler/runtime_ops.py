"""One LUT key as a deployment runtime runs it: a small ONNX graph of the operator (or of the
fused chain, ``profiler.fusion``), loaded in ONNX Runtime or OpenVINO and timed there.

The graph is written with ``onnx.helper`` rather than exported from a torch module: the
exporter takes seconds per graph, this takes milliseconds, and the graph holds exactly the
nodes the torch exporter writes for these operators (Conv, BatchNormalization, Relu, Clip,
Add, MaxPool, GlobalAveragePool, Gemm, ...). The runtime then applies its own graph
optimisations to it, as it does to a whole network: BatchNorm folded into the conv, the
activation and residual add fused where that runtime fuses them.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwprune.profiler.clock import Stats, TimingConfig, TimingError, adaptive, summarize
from hwprune.profiler.fusion import chain_ops
from hwprune.profiler.keyspace import CONV, OpKey, conv_out_hw, is_conv
from hwprune.profiler.ops import cat_sizes, input_shape, weight_copies
from hwprune.zoo.runtimes import open_session, require

OPSET = 17
_ACT_NODES = {"relu": "Relu", "sigmoid": "Sigmoid", "hardswish": "HardSwish",
              "leaky_relu": "LeakyRelu"}


class _Graph:
    """A growing ONNX graph: nodes, initializers (random weights) and inputs."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.onnx = require("onnx")
        self.rng, self.nodes, self.inits, self.inputs, self.n = rng, [], [], [], 0
        self.tag = "ctx"  # nodes of the timed operator are tagged KEY<copy>

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{self.tag}_{prefix}{self.n}"

    def const(self, value: np.ndarray) -> str:
        name = self.name("w")
        self.inits.append(self.onnx.numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def shape(self, dims: tuple[int, ...]) -> str:
        name = self.name("s")
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(dims, dtype=np.int64), name))
        return name

    def weight(self, *shape: int, scale: float = 0.1) -> str:
        # Uniform float32 draws: a cold key's graph holds tens of MB of weights, and normal
        # float64 draws of them took longer than timing the key.
        return self.const(scale * (self.rng.random(shape, dtype=np.float32) - 0.5))

    def input(self, shape: tuple[int, ...]) -> str:
        name = f"x{len(self.inputs)}"
        self.inputs.append(self.onnx.helper.make_tensor_value_info(
            name, self.onnx.TensorProto.FLOAT, list(shape)))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name("t")  # node and output share the name: runtimes name fused nodes by either
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def model(self, outputs: list[str]):
        helper, onnx = self.onnx.helper, self.onnx
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "hwprune_key", self.inputs, outs, self.inits)
        # No shape inference: the runtimes infer shapes themselves, and ONNX's serialised the
        # weights of every copy again (a fifth of a resnet18 key's cost, 2026-11-29).
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="hwprune")


def _activation(g: _Graph, op: str, x: str) -> str:
    if op in _ACT_NODES:
        return g.node(_ACT_NODES[op], [x])
    if op in ("relu6", "hardtanh"):  # torch's ReLU6 and Hardtanh(0, 6): Clip, as exported
        return g.node("Clip", [x, g.const(np.array(0.0)), g.const(np.array(6.0))])
    if op == "hardsigmoid":
        return g.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)
    if op == "silu":
        return g.node("Mul", [x, g.node("Sigmoid", [x])])
    if op == "gelu":  # the exact (erf) form, as opset 17 exports it
        half = g.node("Mul", [x, g.const(np.array(0.5))])
        erf = g.node("Erf", [g.node("Mul", [x, g.const(np.array(2 ** -0.5))])])
        return g.node("Mul", [half, g.node("Add", [erf, g.const(np.array(1.0))])])
    raise TimingError(f"no ONNX form for activation '{op}'")


def _batch_norm(g: _Graph, x: str, c: int) -> str:
    scale, shift = 1 + 0.1 * g.rng.standard_normal(c), 0.1 * g.rng.standard_normal(c)
    mean, var = 0.1 * g.rng.standard_normal(c), 1 + g.rng.random(c)
    return g.node("BatchNormalization", [x, *(g.const(v) for v in (scale, shift, mean, var))],
                  epsilon=1e-5)


def _written(g: _Graph, x: str, x_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """A tensor of ``shape`` written by a 1x1 conv of ``x`` (so that it is in the runtime's own
    layout, as a tensor inside a network is), or a graph input where no such conv fits."""
    h, oh = x_shape[2], shape[2]
    stride = max(1, h // max(1, oh))
    if len(shape) == 4 and len(x_shape) == 4 and (h - 1) // stride + 1 == oh \
            and (x_shape[3] - 1) // stride + 1 == shape[3]:
        tag, g.tag = g.tag, "ctx"
        try:
            return g.node("Conv", [x, g.weight(shape[1], x_shape[1], 1, 1)], kernel_shape=[1, 1],
                          strides=[stride, stride])
        finally:
            g.tag = tag
    return g.input(shape)


def _conv_chain(g: _Graph, key: OpKey, x: str, batch: int, other: list) -> str:
    w = g.weight(key.c_out, key.c_in // key.groups, key.kernel_h, key.kernel_w)
    ins = [x, w] + ([g.weight(key.c_out)] if key.bias else [])
    y = g.node("Conv", ins, kernel_shape=[key.kernel_h, key.kernel_w],
               strides=[key.stride_h, key.stride_w], dilations=[key.dil_h, key.dil_w],
               pads=[key.pad_h, key.pad_w, key.pad_h, key.pad_w], group=key.groups)
    for op in chain_ops(key.op):
        if op == "bn":
            y = _batch_norm(g, y, key.c_out)
        elif op == "add":  # the residual: a second input, written by another branch
            if not other:
                other.append(_written(g, "x0", input_shape(key, batch),
                                      (batch, key.c_out, *conv_out_hw(key))))
            y = g.node("Add", [y, other[0]])
        else:
            y = _activation(g, op, y)
    return y


def _pool(g: _Graph, key: OpKey, x: str) -> str:
    attrs = dict(kernel_shape=[key.kernel_h, key.kernel_w], strides=[key.stride_h, key.stride_w],
                 pads=[key.pad_h, key.pad_w, key.pad_h, key.pad_w])
    if key.op == "max_pool2d":
        return g.node("MaxPool", [x], dilations=[key.dil_h, key.dil_w], **attrs)
    return g.node("AveragePool", [x], count_include_pad=1, **attrs)


def _channelwise(g: _Graph, key: OpKey, x: str, shape: tuple[int, ...], other: list) -> str:
    op = key.op
    if op == "batch_norm2d":
        return _batch_norm(g, x, key.c_in)
    if op == "layer_norm":  # over the last axis, as torch exports nn.LayerNorm (opset 17)
        ins = [x, g.weight(key.c_in)] + ([g.weight(key.c_in)] if key.bias else [])
        return g.node("LayerNormalization", ins, axis=-1, epsilon=1e-5)
    if op == "add":
        if not other:
            other.append(_written(g, "x0", shape, shape))
        return g.node("Add", [x, other[0]])
    if op == "mul" and key.kernel_h == 0:  # by a scalar, a constant as exported
        return g.node("Mul", [x, g.const(np.array(1.001))])
    if op == "mul":
        if not other:
            scale = shape if len(shape) == 2 else (*shape[:2], key.kernel_h, key.kernel_w)
            other.append(_written(g, "x0", shape, scale) if scale == shape else g.input(scale))
        return g.node("Mul", [x, other[0]])
    if op.startswith("pad"):  # as torch exports F.pad: begins then ends, per axis
        top, left = key.pad_h // 2, key.pad_w // 2
        pads = g.shape((0, 0, top, left, 0, 0, key.pad_h - top, key.pad_w - left))
        mode = {"pad": "constant", "pad_reflect": "reflect", "pad_replicate": "edge"}[op]
        return g.node("Pad", [x, pads], mode=mode)
    if op.startswith("upsample"):  # Resize, as torch exports nn.Upsample
        scales = g.const(np.array([1.0, 1.0, key.kernel_h, key.kernel_w]))
        if op == "upsample_nearest":
            return g.node("Resize", [x, "", scales], mode="nearest", nearest_mode="floor",
                          coordinate_transformation_mode="asymmetric")
        return g.node("Resize", [x, "", scales], mode="linear",
                      coordinate_transformation_mode="pytorch_half_pixel")
    if op in ("max_pool2d", "avg_pool2d"):
        return _pool(g, key, x)
    if op == "adaptive_avg_pool2d":
        if (key.kernel_h, key.kernel_w) == (1, 1):
            return g.node("GlobalAveragePool", [x])
        if key.in_h % key.kernel_h or key.in_w % key.kernel_w:
            raise TimingError(f"adaptive_avg_pool2d {key.in_h}x{key.in_w} -> "
                              f"{key.kernel_h}x{key.kernel_w}: no single ONNX pooling node")
        kh, kw = key.in_h // key.kernel_h, key.in_w // key.kernel_w
        return g.node("AveragePool", [x], kernel_shape=[kh, kw], strides=[kh, kw])
    if op == "mean":
        return g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    if op == "cat":
        if not other:
            other.extend(_written(g, "x0", shape, (shape[0], c, *shape[2:]))
                         for c in cat_sizes(key)[1:])
        parts = other
        return g.node("Concat", [x, *parts], axis=1)
    if op == "sum":  # as torch exports x.sum(1) of the (N, K, C, H, W) stack
        b, _, h, w = shape
        y = g.node("Reshape", [x, g.shape((b, key.kernel_h, key.c_in // key.kernel_h, h, w))])
        return g.node("ReduceSum", [y, g.shape((1,))], keepdims=0)
    if op == "softmax":
        y = g.node("Reshape", [x, g.shape((shape[0], key.kernel_h, -1))])
        return g.node("Softmax", [y], axis=1)
    if op == "space_to_depth":  # as torch exports the view, permute and contiguous copy
        b, c, h, w = shape
        k = key.kernel_h
        y = g.node("Reshape", [x, g.shape((b, c, h // k, k, w // k, k))])
        return g.node("Transpose", [y], perm=[0, 3, 5, 1, 2, 4])
    if op == "channel_shuffle":  # as torch exports x.view(...).transpose(1, 2).contiguous()
        b, c, h, w = shape
        grp = key.kernel_h
        y = g.node("Reshape", [x, g.shape((b, grp, c // grp, h, w))])
        y = g.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return g.node("Reshape", [y, g.shape((b, c, h, w))])
    return _activation(g, op, x)


def key_graph(key: OpKey, batch: int = 1, copies: int = 1, seed: int = 0):
    """The ONNX model of ``key`` in a minimal network context, ``copies`` times over.

    Inside a network an operator reads a tensor that the layer before wrote, in the
    runtime's own layout (ONNX Runtime's blocked NCHWc, OpenVINO's), and a residual add
    fuses into the conv only when its other operand is such a tensor too. So the graph's
    input goes through a 1x1 conv first, the residual comes from another, and the operator's
    nodes (named ``KEY<i>_...``) are timed by the runtime's per-node profile, leaving out the
    layout conversions at the graph's edges and the call's own overhead, which a whole
    network pays once. ``copies`` independent copies of the operator, each with its own
    weights, read the same input: weights that stream from memory, as they do in a network
    larger than the cache."""
    g = _Graph(np.random.default_rng(seed))
    shape = input_shape(key, batch)
    if key.op == "cat":  # the input is the first of the joined tensors
        shape = (batch, cat_sizes(key)[0], *shape[2:])
    x = g.input(shape)
    if len(shape) == 4:  # written by a conv, like any tensor in a network
        x = g.node("Conv", [x, g.weight(shape[1], shape[1], 1, 1)], kernel_shape=[1, 1])
    outs, other = [], []
    for i in range(copies):
        g.tag = f"KEY{i}"
        if key.op == "linear":
            ins = [x, g.weight(key.c_out, key.c_in)] + ([g.weight(key.c_out)] if key.bias else [])
            outs.append(g.node("Gemm", ins, transB=1))
        elif is_conv(key.op):
            outs.append(_conv_chain(g, key, x, batch, other))
        else:
            outs.append(_channelwise(g, key, x, shape, other))
    return g.model(outs)


def _inputs(model, rng: np.random.Generator) -> list[np.ndarray]:
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    return [rng.standard_normal(d).astype(np.float32) for d in dims]


# ONNX Runtime hands its per-node times over only at the end of a session, so the number
# of runs is chosen up front: as many as fit in this many seconds, within the protocol's
# min_reps..max_reps. (OpenVINO's are read after every run, with the adaptive protocol.)
ORT_KEY_SECONDS = 0.15
# ... and at most this many: the profile is a JSON event per node and run, and reading the
# events of 1000 runs of a small key cost more than the runs (2026-11-29). A median of
# 300 runs of one node is as steady as one of 1000.
ORT_MAX_RUNS = 300


def _is_key_node(name: str) -> bool:
    """Not the context's (``ctx_...``) nor a layout conversion at the graph's edges. (The
    runtimes rename what they fuse: OpenVINO names a conv with a folded BatchNorm after
    the BN's multiply, so the operator's nodes are what is left, not what is named KEY.)"""
    return not name.startswith(("ctx_", "Reorder")) and name not in ("x0", "x1")


def _key_runs(names: dict[str, list[float]], copies: int, skip: int) -> np.ndarray:
    """Per run, the operator's milliseconds: its nodes summed, averaged over the copies."""
    mine = [v[skip:] for k, v in names.items() if _is_key_node(k)]
    if not mine:
        raise TimingError("the runtime's profile holds none of the operator's nodes")
    n = min(len(v) for v in mine)
    return np.sum([np.asarray(v[:n], dtype=float) for v in mine], axis=0) / 1e3 / copies


def _time_ort(session, xs: list[np.ndarray], cfg: TimingConfig, copies: int) -> np.ndarray:
    t0 = time.perf_counter()
    for _ in range(max(1, cfg.warmup)):
        session.run(*xs)
    per_run = (time.perf_counter() - t0) / max(1, cfg.warmup)
    n = int(min(cfg.max_reps, ORT_MAX_RUNS,
                max(cfg.min_reps, ORT_KEY_SECONDS / max(per_run, 1e-6))))
    for _ in range(n):
        session.run(*xs)
    return _key_runs(session.node_times(), copies, max(1, cfg.warmup))


def _time_openvino(session, xs: list[np.ndarray], cfg: TimingConfig, copies: int) -> np.ndarray:
    def sample(n: int) -> list[float]:
        out = []
        for _ in range(n):
            session.run(*xs)
            out.append(float(_key_runs({k: [v] for k, v in session.last_node_times().items()},
                                       copies, 0)[0]))
        return out

    sample(max(1, cfg.warmup))
    times, _ = adaptive(sample, cfg)
    return times


# Copies are nodes of one graph: a few dozen keep a graph quick to load; their outputs,
# one per copy, are kept under this many bytes.
RUNTIME_MAX_COPIES = 64
MAX_OUTPUT_BYTES = 64 * 2 ** 20


def runtime_copies(key: OpKey, cfg: TimingConfig) -> int:
    """Copies of ``key`` whose weights together exceed ``cfg.cold_bytes`` (1 for hot weights
    or an operator without weights), within the caps above."""
    base = replace(key, op=CONV) if is_conv(key.op) else key
    n = weight_copies(base, cfg.dtype, cfg.cold_bytes)
    if n <= 1:
        return 1
    h, w = conv_out_hw(base) if is_conv(key.op) else (1, 1)
    out_bytes = cfg.batch * key.c_out * h * w * 4
    return int(max(1, min(n, RUNTIME_MAX_COPIES, MAX_OUTPUT_BYTES // max(1, out_bytes))))


@contextlib.contextmanager
def _loaded(model, runtime: str, threads: int, profile: bool = False):
    """``model`` saved to a temporary directory and loaded in ``runtime`` (profiling every
    node when asked); the directory goes with the session."""
    with tempfile.TemporaryDirectory(prefix="hwprune-key-") as tmp:
        path = Path(tmp) / "key.onnx"
        require("onnx").save(model, str(path))
        yield open_session(path, runtime, threads,
                           profile=str(Path(tmp) / "prof") if profile else None)


def runtime_meta(runtime: str, cfg: TimingConfig) -> dict:
    """The ``runtime`` entry of a table timed in a deployment runtime (``RuntimeInfo``)."""
    key = OpKey("relu", 1, 1, in_h=1, in_w=1)
    with _loaded(key_graph(key), runtime, cfg.threads or 1) as session:
        info = session.info
    return {**info.as_dict(), "opset": OPSET,
            "keys": "each key's nodes in a minimal network context, timed by the runtime's "
                    "per-node profile (profiler.runtime_ops)"}


@contextlib.contextmanager
def key_session(key: OpKey, runtime: str, threads: int = 1, batch: int = 1, copies: int = 1,
                profile: bool = False):
    """(session, inputs): ``copies`` of ``key`` in their context (``key_graph``), loaded in
    ``runtime`` (profiling every node when asked; without, for readings of its wall time,
    ``profiler.drift``)."""
    model = key_graph(key, batch, copies)
    with _loaded(model, runtime, threads, profile) as session:
        yield session, _inputs(model, np.random.default_rng(1))


def key_nodes(key: OpKey, runtime: str, threads: int = 1) -> list[str]:
    """The nodes ``runtime`` runs for one copy of ``key`` in its context, after its graph
    optimisations: what it fused (one node for a Conv+BN+add+ReLU it folds entirely)."""
    with key_session(key, runtime, threads, profile=True) as (session, xs):
        session.run(*xs)
        names = session.node_times() if runtime == "onnxruntime" else session.last_node_times()
    return sorted(n for n in names if _is_key_node(n))


def measure_runtime_key(key: OpKey, cfg: TimingConfig, runtime: str, copies: int = 1) -> Stats:
    """Time ``key`` in ``runtime`` on the CPU at ``cfg.threads`` threads (``key_graph``): the
    median (and spread) over runs of the operator's own nodes, as the runtime's profiler
    times them."""
    if cfg.device != "cpu":
        raise TimingError("the deployment runtimes are timed on the CPU here")
    t0 = time.perf_counter()
    # One run times every copy: warm-up and repetitions are counted in operator calls.
    cfg = replace(cfg, warmup=max(1, -(-cfg.warmup // copies)),
                  min_reps=max(5, cfg.min_reps // copies))
    with key_session(key, runtime, cfg.threads or 1, cfg.batch, copies,
                     profile=True) as (session, xs):
        timer = _time_ort if runtime == "onnxruntime" else _time_openvino
        times = timer(session, xs, cfg, copies)
    return summarize(times, runtime, time.perf_counter() - t0, cfg.rel_ci, cfg.ci_of)


__all__ = ["OPSET", "key_graph", "key_nodes", "key_session", "measure_runtime_key", "runtime_copies",
           "runtime_meta"]
