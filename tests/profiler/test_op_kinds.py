"""Operator kinds beyond convs and BatchNorm: squeeze-excitation multiplies, concatenation,
global means and channel shuffles are traced, timed and coupled; anything else is refused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwprune.luts.delta import shrink
from hwprune.profiler import TimingConfig, measure_key, trace_model
from hwprune.profiler.calls import is_call, kind
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
    OpKey("mul", 24, 24, kernel_h=0, kernel_w=0, in_h=7, in_w=9),  # by a scalar
    OpKey("mul", 24, 24, kernel_h=0, kernel_w=0, inplace=True, in_h=7, in_w=9),
    OpKey("mul", 24, 24, kernel_h=0, kernel_w=0),
    OpKey("leaky_relu", 24, 24, inplace=True, in_h=7, in_w=9),
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


class Scaled(nn.Module):
    """Scalar scales as timm's nets write them: a residual scaled by a constant
    (Inception-ResNet), a learnable one-element scale (HGNet's LAB), a mean of two heads
    (x / 2), and a leaky ReLU (TResNet)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.scale = nn.Parameter(torch.ones(1))
        self.proj, self.head = nn.Conv2d(16, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        x = F.leaky_relu(self.bn(self.conv(x)), 0.001, True)
        x = x + 0.17 * x
        x = self.scale * x
        return self.head(self.proj(x / 2).mean([2, 3]))


def test_scalar_scales_and_leaky_relu_are_traced_and_leave_channels_prunable():
    trace = trace_model(Scaled().eval(), 8)
    ops = [(r.key.op, r.key.kernel_h, r.key.inplace) for r in trace.layers]
    assert ("leaky_relu", 1, True) in ops
    assert ops.count(("mul", 0, False)) == 3  # 0.17 * x, scale * x, x / 2
    dims = dimensions(trace.layers, trace.frozen_dims)
    assert sorted(d.channels for d in dims) == [8, 16]  # the scalars froze nothing


class Padded(nn.Module):
    """Padding as TF-ported nets write it ('same' padding, asymmetric at stride 2) and the
    reflection before a blur pool."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16)
        self.proj, self.head = nn.Conv2d(16, 8, 3), nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(F.pad(x, (0, 1, 0, 1)))))
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 2)
        return self.head(self.proj(F.pad(x, (1, 1, 1, 1), mode="replicate")).mean([2, 3]))


def test_padding_is_traced_timed_and_leaves_channels_prunable():
    trace = trace_model(Padded().eval(), 15)
    pads = [r.key for r in trace.layers if r.key.op.startswith("pad")]
    assert pads == [OpKey("pad", 3, 3, pad_h=1, pad_w=1, in_h=15, in_w=15),
                    OpKey("pad_reflect", 16, 16, pad_h=2, pad_w=2, in_h=7, in_w=7),
                    OpKey("pad_replicate", 16, 16, pad_h=2, pad_w=2, in_h=4, in_w=4)]
    assert sorted(d.channels for d in dimensions(trace.layers, trace.frozen_dims)) == [8, 16]
    with torch.inference_mode():
        assert tuple(build_op(pads[1], batch=2)().shape) == (2, 16, 9, 9)
    assert measure_key(pads[2], TimingConfig(max_reps=3, min_reps=2, warmup=1,
                                             threads=1)).mean_ms > 0
    circular = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    circular.register_forward_pre_hook(lambda m, a: (F.pad(a[0], (1, 1, 1, 1),
                                                           mode="circular"),))
    # not a modelled mode: keyed as the exact call (profiler.calls), its channels frozen
    (rec,) = [r for r in trace_model(circular, 8).layers if is_call(r.key.op)]
    assert kind(rec.key.op) == "call:F.pad" and rec.fixed_in and rec.fixed_out


class Fused(nn.Module):
    """HRNet's fusion: a low-resolution branch upsampled (nn.Upsample) and added."""

    def __init__(self, mode: str = "nearest"):
        super().__init__()
        self.hi, self.lo = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up, self.head = nn.Upsample(scale_factor=2, mode=mode), nn.Linear(8, 4)

    def forward(self, x):
        y = self.hi(x) + self.up(self.lo(x))
        return self.head(F.interpolate(y, size=(24, 24), mode="bilinear").mean([2, 3]))


def test_upsampling_by_whole_factors_is_traced_timed_and_couples_its_branches():
    trace = trace_model(Fused().eval(), 12)
    ups = [r.key for r in trace.layers if r.key.op.startswith("upsample")]
    assert ups == [OpKey("upsample_nearest", 8, 8, kernel_h=2, kernel_w=2, in_h=6, in_w=6),
                   OpKey("upsample_bilinear", 8, 8, kernel_h=2, kernel_w=2, in_h=12, in_w=12)]
    dims = dimensions(trace.layers, trace.frozen_dims)
    assert [sorted(trace.layers[i].name for i in d.producers) for d in dims] == [["hi", "lo"]]
    with torch.inference_mode():
        assert tuple(build_op(ups[0], batch=2)().shape) == (2, 8, 12, 12)
    assert measure_key(ups[1], TimingConfig(max_reps=3, min_reps=2, warmup=1,
                                            threads=1)).mean_ms > 0
    bicubic = trace_model(Fused("bicubic").eval(), 12)  # not a modelled mode: an exact call
    assert [kind(r.key.op) for r in bicubic.layers if is_call(r.key.op)] == \
        ["call:F.interpolate"]  # nn.Upsample; the final resize is bilinear


def test_a_model_with_operators_the_table_cannot_time_is_refused_naming_them():
    """An operator without a kind is keyed as its exact call (``profiler.calls``) when its
    shapes follow the batch along one axis per operand. A softmax over a batch-by-batch
    similarity grows along two: no row recorded at one batch replays it at another."""
    class BatchSimilarity(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            f = self.conv(x).mean((2, 3))
            return (f @ f.T).softmax(-1)

    with pytest.raises(UnmodelledOpError, match=r"softmax x1 \(first in softmax\)"):
        trace_model(BatchSimilarity().eval(), 8)


def test_an_argument_that_counts_images_is_replayed_at_the_batch():
    """XCiT's ``pos.repeat(B, 1, 1, 1)`` takes the batch as an argument: keyed as a count
    of images, replayed at the table's batch."""
    class Repeated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.LayerNorm(8)
            self.pos = nn.Parameter(torch.zeros(1, 8, 6, 6))

        def forward(self, x):
            x = self.conv(x) + self.pos.repeat(x.shape[0], 1, 1, 1)
            return self.norm(x.permute(0, 2, 3, 1)).mean(1)

    trace = trace_model(Repeated().eval(), 8)
    (rep,) = [r for r in trace.layers if kind(r.key.op) == "call:Tensor.repeat"]
    assert tuple(build_op(rep.key, batch=3)().shape) == (3, 8, 6, 6)


class LayerScaled(nn.Module):
    """FastViT's and InceptionNeXt's writing: a mixer's residual ``x + gamma * (mix(x) - x)``
    with a learnable (C, 1, 1) layer scale, NASNet's one-pixel shift (a crop on one side,
    a pad on the other), and an MLP head with a LayerNorm over its hidden vector."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.mix = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gamma = nn.Parameter(torch.full((16, 1, 1), 0.01))
        self.fc1, self.fc2 = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1)
        self.h1, self.norm, self.h2 = nn.Linear(16, 24), nn.LayerNorm(24), nn.Linear(24, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = x + self.gamma * (self.mix(x) - x)
        x = F.pad(x, (-1, 1, -1, 1))
        x = x + self.fc2(F.relu(self.fc1(x)))
        return self.h2(self.norm(F.relu(self.h1(x.mean((2, 3))))))


def test_layer_scales_differences_crops_and_a_head_layer_norm_are_traced_and_timed():
    trace = trace_model(LayerScaled().eval(), (9, 11))
    keys = [r.key for r in trace.layers]
    assert OpKey("add", 16, 16, in_h=9, in_w=11) in keys  # mix(x) - x: keyed as an add
    assert OpKey("mul", 16, 16, in_h=9, in_w=11) in keys  # the (C, 1, 1) layer scale
    assert OpKey("pad", 16, 16, in_h=9, in_w=11) in keys  # (-1, 1, -1, 1): a shifted copy
    assert OpKey("layer_norm", 24, 24, bias=True) in keys
    # The layer scale is a parameter Torch-Pruning is not asked to cut: the block's 16
    # channels stay; the MLP's hidden 32 and the head's 24 (through its LayerNorm) prune.
    assert sorted(d.channels for d in dimensions(trace.layers, trace.frozen_dims)) == [24, 32]
    for key in (OpKey("layer_norm", 24, 24, bias=True),
                OpKey("pad", 16, 16, pad_h=-1, pad_w=-2, in_h=9, in_w=11)):
        with torch.inference_mode():
            out = build_op(key, batch=2)()
        assert tuple(out.shape) == ((2, 24) if key.op == "layer_norm" else (2, 16, 8, 9))
        assert measure_key(key, TimingConfig(max_reps=3, min_reps=2, warmup=1,
                                             threads=1)).mean_ms > 0
    crop_too_far = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    crop_too_far.register_forward_hook(lambda m, a, y: F.pad(y, (-3, -3, 0, 0)))
    # nothing left of the width: not a pad key, the exact call
    kinds = [kind(r.key.op) for r in trace_model(crop_too_far, (4, 6)).layers]
    assert "call:F.pad" in kinds and "pad" not in kinds


class SplitAttention(nn.Module):
    """ResNeSt's split attention (radix 2, as timm's SplitAttn writes it) and SKNet's
    selective kernel (two paths stacked), after TResNet's space-to-depth stem."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(48, 2 * c, 3, padding=1)
        self.bn = nn.BatchNorm2d(2 * c)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, 2 * c, 1)
        self.paths = nn.ModuleList(nn.Conv2d(c, c, k, padding=k // 2) for k in (1, 3))
        self.fc_red, self.fc_sel = nn.Conv2d(c, 4, 1), nn.Conv2d(4, 2 * c, 1)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        n, ch, h, w = x.shape
        x = x.view(n, ch, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        x = F.relu(self.bn(self.stem(x.view(n, ch * 16, h // 4, w // 4))))
        b, rc, h, w = x.shape
        x = x.reshape(b, 2, rc // 2, h, w)
        gap = x.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(F.relu(self.fc1(gap))).view(b, 1, 2, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(b, -1)
        x = (x * attn.reshape(b, 2, rc // 2, 1, 1)).sum(dim=1)
        x = torch.stack([p(x) for p in self.paths], dim=1)
        sel = self.fc_sel(F.relu(self.fc_red(x.sum(1).mean((2, 3), keepdim=True))))
        x = torch.sum(x * torch.softmax(sel.view(b, 2, rc // 2, 1, 1), dim=1), dim=1)
        return self.head(x.mean((2, 3)))


def test_split_attention_and_space_to_depth_are_traced_timed_and_frozen():
    trace = trace_model(SplitAttention().eval(), 16)
    keys = [r.key for r in trace.layers]
    assert keys[0] == OpKey("space_to_depth", 3, 3, kernel_h=4, kernel_w=4, in_h=16, in_w=16)
    assert OpKey("sum", 16, 16, kernel_h=2, in_h=4, in_w=4) in keys  # the radix groups
    assert OpKey("softmax", 16, 16, kernel_h=2) in keys
    assert OpKey("mul", 16, 16, in_h=4, in_w=4) in keys  # (N, 2, 8, H, W) x (N, 2, 8, 1, 1)
    assert OpKey("cat", 16, 16, kernel_h=2, in_h=4, in_w=4) in keys  # the stacked paths
    # Channels regrouped by reshapes and stacks cannot be followed: only the attentions'
    # bottlenecks (fc1's and fc_red's 4) stay prunable.
    assert [d.channels for d in dimensions(trace.layers, trace.frozen_dims)] == [4, 4]
    for key, shape in ((keys[0], (2, 4, 4, 3, 4, 4)), (OpKey("sum", 16, 16, kernel_h=2,
                       in_h=4, in_w=4), (2, 8, 4, 4)), (OpKey("softmax", 16, 16, kernel_h=2),
                                                        (2, 2, 8))):
        with torch.inference_mode():
            assert tuple(build_op(key, batch=2)().shape) == shape
        assert measure_key(key, TimingConfig(max_reps=3, min_reps=2, warmup=1,
                                             threads=1)).mean_ms > 0


def test_a_conv_with_a_fixed_filter_keeps_its_channels():
    """TResNet's anti-aliasing: F.conv2d with a (C, 1, 3, 3) blur held in a buffer. Pruning
    the channels would leave the buffer's C behind (the variant failed at run time)."""
    class Blurred(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.register_buffer("filt", torch.ones(8, 1, 3, 3) / 9)
            self.proj, self.head = nn.Conv2d(8, 6, 1), nn.Linear(6, 4)

        def forward(self, x):
            x = F.conv2d(F.relu(self.bn(self.conv(x))), self.filt, stride=2, padding=1, groups=8)
            return self.head(F.relu(self.proj(x)).mean((2, 3)))

    trace = trace_model(Blurred().eval(), 8)
    assert [d.channels for d in dimensions(trace.layers, trace.frozen_dims)] == [6]


def test_a_linear_layer_over_positions_is_keyed_with_them_not_as_one_vector():
    """A Linear on a channels-last map (ConvNeXt's pointwise conv written as nn.Linear) runs
    once per position: keyed as one (N, C) vector it would be estimated at 1/(H*W) of its
    cost. It is keyed as the exact call, positions included, its channels frozen."""
    class Pointwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.pw = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 16)

        def forward(self, x):
            x = self.pw(self.bn(self.conv(x)).permute(0, 2, 3, 1))
            return x.permute(0, 3, 1, 2).mean((2, 3))

    trace = trace_model(Pointwise().eval(), 8)
    (pw,) = [r for r in trace.layers if r.name == "pw"]
    assert kind(pw.key.op) == "call:F.linear" and pw.fixed_in and pw.fixed_out
    assert tuple(build_op(pw.key, batch=3)().shape) == (3, 6, 6, 16)
    assert dimensions(trace.layers, trace.frozen_dims) == []
