"""Operator kinds beyond convs and BatchNorm: squeeze-excitation multiplies, concatenation,
global means and channel shuffles are traced, timed and coupled; anything else is refused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwprune.luts.delta import shrink
from hwprune.profiler import TimingConfig, measure_key, trace_model
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.keyspace import OpKey, UnmodelledOpError, grid_for
from hwprune.profiler.ops import KNOWN_OPS, build_op


class SE(nn.Module):
    """conv -> BN -> SiLU -> squeeze-excitation (as torchvision's) -> conv -> mean -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.fc1, self.fc2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.proj = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.silu(self.bn(self.conv(x)))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = self.proj(s * x)
        return self.head(x.mean([2, 3]))


class CatShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        x = self.bn(torch.cat([self.a(x), self.b(x)], 1))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.head(self.grouped(x)).mean([2, 3])


def _ops(trace):
    return [r.key.op for r in trace.layers]


def test_squeeze_excitation_multiply_and_mean_are_traced_and_coupled():
    trace = trace_model(SE().eval(), 16)
    assert _ops(trace).count("mul") == 1 and "mean" in _ops(trace)
    mul = next(r for r in trace.layers if r.key.op == "mul")
    assert mul.key == OpKey("mul", 32, 32, in_h=16, in_w=16)  # kernel 1x1: the SE scale
    # The multiply ties fc2's outputs to the block's channels: one dimension, two producers.
    dims = dimensions(trace.layers, trace.frozen_dims)
    names = {trace.layers[i].name for d in dims for i in d.producers if len(d.producers) > 1}
    assert names == {"conv", "fc2"}
    block = next(d for d in dims if len(d.producers) == 2)
    assert any(trace.layers[i].key.op == "mul" for i in block.passthrough)
    # A channel-wise kind: pruning shrinks it on both sides, its grid is 1-D.
    assert shrink(mul.key, 16, "both") == OpKey("mul", 16, 16, in_h=16, in_w=16)
    assert [k.c_in for k in grid_for(mul, 16)] == [16, 32]


def test_concatenation_shuffle_and_grouped_conv_freeze_their_channels():
    trace = trace_model(CatShuffle().eval(), 8)
    by_op = {r.key.op: r for r in trace.layers}
    assert by_op["cat"].key == OpKey("cat", 16, 16, kernel_h=2, in_h=8, in_w=8)
    assert by_op["channel_shuffle"].key == OpKey("channel_shuffle", 16, 16, kernel_h=2,
                                                 in_h=8, in_w=8)
    # Nothing here is prunable, and no grid key is wasted on channel counts no variant has.
    assert dimensions(trace.layers, trace.frozen_dims) == []
    for r in trace.layers:
        assert grid_for(r, 4) == [r.key], r.name


@pytest.mark.parametrize("key", [
    OpKey("mul", 24, 24, in_h=7, in_w=9),
    OpKey("mul", 24, 24, kernel_h=7, kernel_w=9, in_h=7, in_w=9),
    OpKey("mul", 24, 24, inplace=True, in_h=7, in_w=9),
    OpKey("mul", 24, 24),
    OpKey("cat", 24, 24, kernel_h=5, in_h=7, in_w=9),
    OpKey("mean", 24, 24, in_h=7, in_w=9),
    OpKey("channel_shuffle", 24, 24, kernel_h=2, in_h=7, in_w=9),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_new_kinds_build_and_time(key, channels_last):
    assert key.op in KNOWN_OPS
    with torch.inference_mode():
        out = build_op(key, batch=2, channels_last=channels_last)()
    expected = (2, 24) if key.op == "mean" or not key.in_h else (2, 24, 7, 9)
    assert tuple(out.shape) == expected
    stats = measure_key(key, TimingConfig(max_reps=3, min_reps=2, warmup=1, threads=1))
    assert stats.mean_ms > 0


def test_a_model_with_operators_the_table_cannot_time_is_refused_naming_them():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.LayerNorm(8)

        def forward(self, x):
            x = self.conv(x).permute(0, 2, 3, 1)
            return torch.tanh(self.norm(x)).mean(1)

    with pytest.raises(UnmodelledOpError, match=r"layer_norm x1 \(first in norm\).*tanh"):
        trace_model(Attn().eval(), 8)
