"""The trace as a deployment runtime runs it: Conv+BN(+add)(+activation) chains."""

from collections import Counter

import pytest
import torch
import torchvision
from torch import nn

from hwprune.luts.delta import LatencyModel
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.fusion import chain_ops, fuse_trace, runtime_trace
from hwprune.profiler.keyspace import is_conv, macs, trace_model


def _ops(trace):
    return Counter(r.key.op for r in trace.layers)


def test_resnet_blocks_fuse_as_the_runtimes_run_them():
    t = trace_model(torchvision.models.resnet18(), 64)
    f = fuse_trace(t)
    ops = _ops(f)
    # stem and each block's first conv: conv+bn+relu; each block's second conv takes the
    # residual add and the ReLU after it; the downsample convs keep only their BN.
    assert ops == {"conv2d+bn+relu": 9, "conv2d+bn+add+relu": 8, "conv2d+bn": 3,
                   "max_pool2d": 1, "adaptive_avg_pool2d": 1, "linear": 1}
    assert not any(r.key.op in ("batch_norm2d", "relu", "add") for r in f.layers)
    by_name = {r.name: r for r in f.layers}
    assert by_name["layer2.0.conv2"].key.op == "conv2d+bn+add+relu"
    assert by_name["layer2.0.downsample.0"].key.op == "conv2d+bn"
    # the chain keeps its conv's shape, channel dimensions and work
    conv = next(r for r in t.layers if r.name == "layer2.0.conv2")
    fused = by_name["layer2.0.conv2"]
    assert (fused.key.c_in, fused.key.c_out, fused.in_dim, fused.out_dim) == \
        (conv.key.c_in, conv.key.c_out, conv.in_dim, conv.out_dim)
    assert macs(fused.key) == macs(conv.key) > 0 and is_conv(fused.key.op)
    assert chain_ops(fused.key.op) == ["bn", "add", "relu"]
    # the channel dimensions the pruner works on are the same, in the same order
    assert [d.id for d in dimensions(f.layers, f.frozen_dims)] == \
        [d.id for d in dimensions(t.layers, t.frozen_dims)]
    assert fuse_trace(f) is f and runtime_trace(t, "torch") is t


def test_mobilenet_v2_fuses_relu6_and_the_residual_add():
    f = fuse_trace(trace_model(torchvision.models.mobilenet_v2(), 64))
    ops = _ops(f)
    assert ops["conv2d+bn+hardtanh"] == 35 and ops["conv2d+bn+add"] == 10
    assert ops["conv2d+bn"] == 7 and sum(ops.values()) == 54


class _Shared(nn.Module):
    """A conv whose output is read twice: nothing may be folded into it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + self.conv2(y)


class _ReluThenAdd(nn.Module):
    """conv -> relu -> add: the runtimes fold an add only before the activation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)) + x


def test_a_chain_stops_where_a_tensor_is_read_twice_or_out_of_order():
    f = fuse_trace(trace_model(_Shared(), 16))
    assert [r.key.op for r in f.layers] == ["conv2d", "batch_norm2d", "conv2d+add"]
    g = fuse_trace(trace_model(_ReluThenAdd(), 16))
    assert [r.key.op for r in g.layers] == ["conv2d+relu", "add"]


def test_a_runtime_table_is_asked_for_the_fused_chains(demo_lut):
    from hwprune.luts import Lut, LutMissError
    from hwprune.zoo import resolve_model

    trace = trace_model(resolve_model("demo").module, 32, 1)
    lut = Lut.load(demo_lut)
    LatencyModel(trace, lut)  # a torch table: its own keys
    lut.meta["runtime"] = {"runtime": "onnxruntime"}  # the same rows, called a runtime's
    with pytest.raises(LutMissError, match="conv2d\\+bn"):
        LatencyModel(trace, lut)
