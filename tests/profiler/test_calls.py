"""Operators without a kind (attention, norms over tokens) keyed as their exact calls: traced
with their batch axes, timed by replaying them, frozen so that pruning never changes them,
and replayed from torch's own functions only."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwprune.profiler import TimingConfig, measure_key, trace_model
from hwprune.profiler.calls import _operand, _order, build_call, is_call, kind, parse
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import KeySpaceError, OpKey
from hwprune.profiler.ops import build_op
from hwprune.pruner.groups import build_graph, check_matches, find_dims, remove_channels


class Hybrid(nn.Module):
    """A conv stem and a strided conv (the channels between them prunable), then attention
    over the map's positions as MobileViT and LeViT write it: LayerNorm and Linear over
    tokens, q @ k^T plus a learned per-head position bias (no batch axis), a softmax over
    the scores, a projection, the tokens added back and a linear head."""

    def __init__(self, side: int = 8):
        super().__init__()
        self.stem, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.down, self.bn2 = nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24)
        self.norm, self.qkv, self.proj = nn.LayerNorm(24), nn.Linear(24, 72), nn.Linear(24, 24)
        n = (side // 2) ** 2
        self.bias = nn.Parameter(torch.randn(2, n, n) * 0.1)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = F.relu(self.bn2(self.down(F.relu(self.bn1(self.stem(x))))))
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm(t)).reshape(b, h * w, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1)) * (c // 2) ** -0.5 + self.bias
        t = t + self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c))
        return self.head(t.mean(1))


def _calls(trace):
    return [r for r in trace.layers if is_call(r.key.op)]


def test_attention_is_keyed_as_exact_calls_with_batch_axes_and_frozen_channels():
    trace = trace_model(Hybrid().eval(), 8)
    kinds = [kind(r.key.op) for r in _calls(trace)]
    assert kinds.count("call:F.linear") == 2 and kinds.count("call:Tensor.matmul") == 2
    assert {"call:F.layer_norm", "call:Tensor.softmax", "call:Tensor.add"} <= set(kinds)
    assert all(r.fixed_in and r.fixed_out for r in _calls(trace))
    # the bias is added to the scores of every image: no batch axis; the scores have one
    add = next(r for r in _calls(trace) if kind(r.key.op) == "call:Tensor.add")
    scores, bias = parse(add.key.op)["args"]
    assert scores["t"] == [1, 2, 16, 16] and scores["b"] == 0 and "b" not in bias
    assert tuple(build_op(add.key, batch=3)().shape) == (3, 2, 16, 16)
    # only the stem's channels can be pruned: everything the attention reads stays
    assert [d.channels for d in dimensions(trace.layers, trace.frozen_dims)] == [16]


def test_an_operand_is_replayed_in_the_memory_order_it_was_read():
    trace = trace_model(Hybrid().eval(), 8)
    qk = next(r for r in _calls(trace) if kind(r.key.op) == "call:Tensor.matmul")
    fn = build_op(qk.key, batch=2)
    k = parse(qk.key.op)["args"][1]
    # k^T, a view of the qkv output (tokens outer, then heads, then features): the batch,
    # then tokens, heads and features in memory, whatever the shape's axis order says
    assert k["t"] == [1, 2, 12, 16] and k["o"] == [0, 3, 1, 2]
    replayed = _operand(k, 2, torch.float32, "cpu")
    assert replayed.shape == (2, 2, 12, 16) and _order(replayed) == [0, 3, 1, 2]
    assert tuple(fn().shape) == (2, 2, 16, 16)
    assert measure_key(qk.key, TimingConfig(max_reps=3, min_reps=2, warmup=1,
                                            threads=1)).median_ms > 0


def test_torch_pruning_and_the_latency_model_agree_and_pruning_leaves_the_calls_as_they_were():
    torch.manual_seed(0)
    model = Hybrid().eval()
    x = torch.randn(1, 3, 8, 8)
    trace = trace_model(model, 8)
    graph = build_graph(model, x)
    dims = find_dims(model, graph, trace)
    check_matches(dims, trace)
    assert [d.producers for d in dims] == [("stem",)]
    remove_channels(model, graph, dims[0], list(range(6)))
    assert model.stem.out_channels == 10 and model(x).shape == (1, 5)
    after = trace_model(model, 8)
    assert [r.key for r in _calls(after)] == [r.key for r in _calls(trace)]
    assert next(r.key for r in after.layers if r.name == "stem").c_out == 10


def test_a_table_can_name_only_torch_functions_to_replay():
    for fn in ("os.system", "builtins.eval", "torch.save", "Tensor.nonexistent"):
        op = "call:" + fn + " " + json.dumps({"fn": fn, "args": [{"v": "echo hi"}],
                                              "kwargs": {}})
        with pytest.raises(ValueError, match="not one of torch's overridable functions"):
            build_call(op, 1, torch.float32, "cpu")
        with pytest.raises(ValueError):
            build_op(OpKey(op, 1, 1))


def test_a_runtime_table_refuses_a_model_with_calls_naming_them():
    trace = trace_model(Hybrid().eval(), 8)
    with pytest.raises(KeySpaceError, match=r"--runtime onnxruntime.*F.linear x2.*--runtime torch"):
        runtime_trace(trace, "onnxruntime")
    assert runtime_trace(trace, "torch") is trace


def test_adds_of_a_scalar_or_a_per_channel_bias_are_element_wise_passes_not_calls():
    class HardSigmoidGate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.shift = nn.Parameter(torch.zeros(8, 1, 1))
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            x = self.bn(self.conv(x))
            x = x * (F.relu6(x + 3.0) / 6.0) + self.shift
            return self.head(x.mean((2, 3)))

    trace = trace_model(HardSigmoidGate().eval(), 6)
    assert not _calls(trace)
    muls = [r.key for r in trace.layers if r.key.op == "mul"]
    assert [(k.kernel_h, k.kernel_w) for k in muls] == [(0, 0), (0, 0), (6, 6), (1, 1)]


def test_a_reshape_of_a_transposed_tensor_is_keyed_as_the_copy_it_makes():
    """MobileViT unfolds patches with a transpose and a reshape: the reshape of the
    transposed tensor copies, a cost like ``contiguous()``'s. At batch 1 the size-1 axis
    lets it view; at batch 2 it copies: replayed in each batch's memory order."""
    class Patches(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

        def forward(self, x):
            x = self.conv(x)
            b, c, h, w = x.shape
            t = x.reshape(b, c, h * w).transpose(1, 2).reshape(b * h * w, c)
            return self.head(t).reshape(b, h * w * 2).mean(1, keepdim=True)

    trace = trace_model(Patches().eval(), 4)
    (copy,) = [r for r in _calls(trace) if kind(r.key.op) == "call:Tensor.reshape"]
    spec = parse(copy.key.op)["args"][0]
    assert spec["t"] == [1, 16, 8] and spec["o"] == spec["o2"] == [0, 2, 1] and spec["b"] == 0
    one, two = (build_op(copy.key, batch=n)() for n in (1, 2))
    assert one.shape == (16, 8) and not one.is_contiguous()  # a view, as in the network
    assert two.shape == (32, 8) and two.is_contiguous()  # a copy, as in the network


def test_a_batchnorm_over_vectors_is_built_as_one():
    """EfficientViT (MSRA)'s head normalises (N, C) vectors with a BatchNorm1d: keyed as a
    batch norm with no map, timed as that, not as a BatchNorm2d of a 4-D input."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.BatchNorm1d(8 * 4 * 4),
                        nn.Linear(8 * 4 * 4, 2)).eval()
    (bn,) = [r.key for r in trace_model(net, 6).layers if r.key.op == "batch_norm2d"]
    assert (bn.in_h, bn.in_w, bn.c_in) == (0, 0, 128)
    assert tuple(build_op(bn, batch=3)().shape) == (3, 128)
    assert measure_key(bn, TimingConfig(max_reps=3, min_reps=2, warmup=1, threads=1)).median_ms > 0
