from collections import Counter
from dataclasses import replace

import pytest
import torch.nn.functional as F
from torch import nn

from hwprune.profiler.keyspace import (KeySpaceError, OpKey, channel_grid, grid_for, scan_keys,
                               trace_model, unique_layers)
from hwprune.zoo import resolve_model


@pytest.fixture(scope="module")
def r18_trace():
    m = resolve_model("resnet18")
    return trace_model(m.module, 224, 3)


def test_channel_grid_counts_down_from_the_original():
    assert channel_grid(64, 16) == [16, 32, 48, 64]
    assert channel_grid(24, 16) == [8, 24]
    assert channel_grid(3, 16) == [3]
    assert channel_grid(5, 1) == [1, 2, 3, 4, 5]
    with pytest.raises(KeySpaceError):
        channel_grid(8, 0)


def test_resnet18_records_every_operator(r18_trace):
    ops = Counter(r.key.op for r in r18_trace.layers)
    assert ops == {"conv2d": 20, "batch_norm2d": 20, "relu": 17, "add": 8, "max_pool2d": 1,
                   "adaptive_avg_pool2d": 1, "linear": 1}
    first = r18_trace.layers[0]
    assert first.name == "conv1" and first.fixed_in
    assert first.key == OpKey("conv2d", 3, 64, 7, 7, 2, 2, 3, 3, 1, 1, 1, False, False, 224, 224)
    ds = {r.name: r.key for r in r18_trace.layers}["layer2.0.downsample.0"]
    assert (ds.c_in, ds.c_out, ds.kernel_h, ds.stride_h, ds.in_h) == (64, 128, 1, 2, 56)
    adds = [r for r in r18_trace.layers if r.key.op == "add"]
    assert adds[0].name == "layer1.0.add" and adds[0].key.inplace
    assert r18_trace.layers[-1].key.op == "linear" and r18_trace.layers[-1].fixed_out


def test_resnet18_deduplicates_and_grid_size_matches_hand_count(r18_trace):
    convs = {k: v for k, v in unique_layers(r18_trace).items() if k.op == "conv2d"}
    assert len(convs) == 11  # 20 convs, 11 distinct configs
    assert len(convs[OpKey("conv2d", 512, 512, 3, 3, 1, 1, 1, 1, in_h=7, in_w=7)]) == 3
    keys = scan_keys(r18_trace, 64)
    assert len(keys) == len(set(keys))
    # (c_in/64 * c_out/64) per distinct config; conv1's 3 input channels are fixed.
    hand = 1 * 1 + 1 * 1 + 1 * 2 + 2 * 2 + 1 * 2 + 2 * 4 + 4 * 4 + 2 * 4 + 4 * 8 + 8 * 8 + 4 * 8
    assert sum(k.op == "conv2d" for k in keys) == hand == 170
    for k in keys:  # every original config is in the grid
        assert k.c_in >= 1 and k.c_out >= 1
    assert OpKey("conv2d", 512, 512, 3, 3, 1, 1, 1, 1, in_h=7, in_w=7) in keys


def test_depthwise_and_grouped_convs_shrink_consistently():
    m = resolve_model("mobilenet_v2")
    trace = trace_model(m.module, 224, 3)
    dw = [r for r in trace.layers if r.key.op == "conv2d" and r.key.groups > 1]
    assert dw and all(r.key.groups == r.key.c_in == r.key.c_out for r in dw)
    for rec in dw:
        for k in grid_for(rec, 16):
            assert k.groups == k.c_in == k.c_out
    # (the trace exists, so nothing went unmodelled: ReLU6 is recorded as hardtanh)
    assert "hardtanh" in {r.key.op for r in trace.layers}

    grouped = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 48, 3, groups=4))
    rec = [r for r in trace_model(grouped, 16, 3).layers if r.key.groups == 4][0]
    # A traced grouped conv's channels are frozen (Torch-Pruning cannot keep its groups
    # equal): its grid is the original key alone. The grid of its config, were it free:
    assert rec.fixed_in and rec.fixed_out and grid_for(rec, 16) == [rec.key]
    keys = grid_for(replace(rec, fixed_in=False, fixed_out=False), 16)
    assert keys and all(k.c_in % 4 == 0 and k.c_out % 4 == 0 and k.groups == 4 for k in keys)
    assert {k.c_out for k in keys} == {16, 32, 48} and {k.c_in for k in keys} == {16, 32}


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y + y
        return F.adaptive_avg_pool2d(y, 1).flatten(1)


def test_functional_calls_in_forward_are_recorded():
    trace = trace_model(_Functional(), 12, 3)
    assert [(r.name, r.key.op) for r in trace.layers] == [
        ("conv", "conv2d"), ("relu", "relu"), ("add", "add"),
        ("adaptive_avg_pool2d", "adaptive_avg_pool2d")]
    assert trace.layers[0].key.bias


def test_model_without_conv_is_refused():
    with pytest.raises(KeySpaceError, match="no Conv2d"):
        trace_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 8, 1)


def test_layer_filter(r18_trace):
    kept = r18_trace.filtered(["layer4.*"])
    assert kept.layers and all(r.name.startswith("layer4.") for r in kept.layers)
    with pytest.raises(KeySpaceError, match="no layer matches"):
        r18_trace.filtered(["nope*"])
