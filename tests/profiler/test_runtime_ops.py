"""Keys timed as ONNX Runtime and OpenVINO run them."""

import numpy as np
import pytest
import torch

from hwprune.profiler import TimingConfig
from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.ops import build_op
from hwprune.profiler.runtime_ops import (key_graph, key_nodes, measure_runtime_key, runtime_copies,
                                  runtime_meta)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

RUNTIMES = ["onnxruntime", "openvino"]
BLOCK = OpKey("conv2d+bn+add+relu", 32, 32, 3, 3, 1, 1, 1, 1, in_h=14, in_w=14)

# One key of every operator kind the tables hold, with its torch twin for the output shape.
KINDS = [
    OpKey("conv2d", 8, 16, 3, 3, 2, 2, 1, 1, bias=True, in_h=15, in_w=15),
    OpKey("conv2d+bn+hardtanh", 16, 16, 3, 3, 1, 1, 1, 1, groups=16, in_h=8, in_w=8),
    OpKey("conv2d+bn+add", 8, 16, 1, 1, 2, 2, in_h=9, in_w=9),
    OpKey("conv2d+silu", 8, 8, 1, 1, groups=2, in_h=6, in_w=6),
    BLOCK,
    OpKey("batch_norm2d", 8, 8, in_h=6, in_w=6),
    *[OpKey(a, 8, 8, in_h=6, in_w=6) for a in ("relu", "relu6", "hardtanh", "silu",
                                               "hardswish", "hardsigmoid", "gelu", "sigmoid",
                                               "leaky_relu")],
    OpKey("add", 8, 8, in_h=6, in_w=6),
    OpKey("mul", 8, 8, in_h=6, in_w=6),
    OpKey("mul", 8, 8, in_h=6, in_w=6, kernel_h=6, kernel_w=6),
    OpKey("mul", 8, 8, in_h=6, in_w=6, kernel_h=0, kernel_w=0),
    OpKey("pad", 8, 8, pad_h=1, pad_w=1, in_h=7, in_w=7),
    OpKey("pad_reflect", 8, 8, pad_h=2, pad_w=2, in_h=6, in_w=6),
    OpKey("pad_replicate", 8, 8, pad_h=1, pad_w=0, in_h=6, in_w=6),
    OpKey("pad", 8, 8, pad_h=-1, pad_w=0, in_h=6, in_w=6),  # a crop on one side
    OpKey("layer_norm", 24, 24, bias=True),
    OpKey("sum", 16, 16, kernel_h=2, in_h=5, in_w=5),
    OpKey("softmax", 12, 12, kernel_h=2),
    OpKey("space_to_depth", 3, 3, kernel_h=4, kernel_w=4, in_h=8, in_w=8),
    OpKey("upsample_nearest", 8, 8, kernel_h=2, kernel_w=2, in_h=5, in_w=5),
    OpKey("upsample_bilinear", 8, 8, kernel_h=4, kernel_w=4, in_h=3, in_w=3),
    OpKey("cat", 12, 12, kernel_h=3, in_h=5, in_w=5),
    OpKey("mean", 8, 8, in_h=6, in_w=6),
    OpKey("channel_shuffle", 8, 8, kernel_h=2, in_h=5, in_w=5),
    OpKey("max_pool2d", 8, 8, 3, 3, 2, 2, 1, 1, in_h=13, in_w=13),
    OpKey("avg_pool2d", 8, 8, 2, 2, 2, 2, in_h=8, in_w=8),
    OpKey("adaptive_avg_pool2d", 8, 8, 1, 1, in_h=7, in_w=7),
    OpKey("adaptive_avg_pool2d", 8, 8, 2, 2, in_h=8, in_w=8),
    OpKey("linear", 32, 10, bias=True),
]


def _torch_shape(key: OpKey) -> tuple:
    base = OpKey(**{**key.as_dict(), "op": key.op.split("+")[0]})
    with torch.inference_mode():
        return tuple(build_op(base)().shape)


@pytest.mark.parametrize("key", KINDS, ids=lambda k: k.op)
def test_every_operator_kind_has_an_onnx_graph_the_runtime_runs(key, tmp_path):
    import onnx

    # The graph names its outputs' shapes once ONNX's shape inference has run (the profiler
    # leaves that to the runtimes, which infer shapes themselves).
    model = onnx.shape_inference.infer_shapes(key_graph(key, copies=2))
    onnx.checker.check_model(model)
    path = tmp_path / "k.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.rand(*[d for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    outs = sess.run(None, feeds)
    assert len(outs) == 2  # one output per copy
    assert all(o.shape == _torch_shape(key) for o in outs), (outs[0].shape, _torch_shape(key))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_key_is_timed_in_the_runtime_with_its_chain_fused(runtime):
    # In context (input and residual written by convs) both runtimes fold the BN, the add and
    # the ReLU into the convolution: one node, no separate Add or Relu to pay for.
    nodes = key_nodes(BLOCK, runtime)
    assert len(nodes) == 1, nodes
    tc = TimingConfig(threads=1, warmup=2, min_reps=5, max_reps=30).validate()
    small = measure_runtime_key(OpKey("conv2d+bn+relu", 8, 8, 3, 3, 1, 1, 1, 1, in_h=14,
                                      in_w=14), tc, runtime)
    big = measure_runtime_key(OpKey("conv2d+bn+relu", 64, 64, 3, 3, 1, 1, 1, 1, in_h=14,
                                    in_w=14), tc, runtime)
    assert small.algo == runtime and small.reps >= 5 and small.median_ms > 0
    assert small.median_ms < big.median_ms  # 64x the multiply-adds


def test_cold_keys_are_timed_over_weight_copies():
    tc = TimingConfig(threads=1, cold_bytes=8 * 2 ** 20).validate()
    conv = OpKey("conv2d+bn+relu", 64, 64, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)  # 147 KB
    assert runtime_copies(conv, tc) > 8
    assert runtime_copies(OpKey("relu", 64, 64, in_h=8, in_w=8), tc) == 1  # no weights
    hot = TimingConfig(threads=1).validate()
    assert runtime_copies(conv, hot) == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_metadata_names_what_the_timings_depend_on(runtime):
    meta = runtime_meta(runtime, TimingConfig(threads=1).validate())
    assert meta["runtime"] == runtime and meta["threads"] == 1 and meta["version"]
    assert meta["provider"] and meta["optimization"] and meta["opset"] >= 13


def test_an_operator_openvino_mostly_skips_is_timed_not_refused():
    # OpenVINO's profile marks this pool NOT_RUN in most runs (zoo.runtimes): those runs
    # count as half its 1-us resolution instead of leaving the key with no runs (which
    # stopped a scan) or a median of 0 (which no table may hold).
    pytest.importorskip("openvino")
    key = OpKey("adaptive_avg_pool2d", 32, 32, 1, 1, in_h=4, in_w=4)
    tc = TimingConfig(threads=1, warmup=2, min_reps=50, max_reps=400).validate()
    stats = measure_runtime_key(key, tc, "openvino")
    assert 0.0005 <= stats.median_ms < 0.005 and stats.reps >= 50
