"""The coupling tracker must agree with Torch-Pruning's physical channel removal."""

import pytest
import torch

from hwprune.luts import build_variant, plan_variants, shrink
from hwprune.profiler import trace_model
from hwprune.profiler.coupling import dimensions
from hwprune.zoo import resolve_model


@pytest.mark.parametrize("name,n_dims", [("demo", 4), ("resnet18", 12), ("mobilenet_v2", 25)])
def test_variants_have_exactly_the_predicted_keys(name, n_dims):
    m = resolve_model(name)
    size = 32 if name == "demo" else 64  # channel coupling does not depend on resolution
    trace = trace_model(m.module, size, m.in_channels)
    dims = dimensions(trace.layers, trace.frozen_dims)
    assert len(dims) == n_dims
    example = torch.randn(1, m.in_channels, size, size)
    for plan in plan_variants(dims, 16, 6, seed=1):
        predicted = [r.key for r in trace.layers]
        for d, target in zip(dims, plan.channels):
            k = d.channels - target
            for side, layers in (("out", d.producers), ("in", d.consumers),
                                 ("both", d.passthrough)):
                for i in layers:
                    predicted[i] = shrink(predicted[i], k, side)
        pruned = build_variant(m.module, trace, dims, plan.channels, example)
        assert [r.key for r in trace_model(pruned, size, m.in_channels).layers] == predicted, \
            plan.kind
        assert pruned(example).shape == (1, 10 if name == "demo" else 1000)


def test_residual_dimension_of_resnet18_couples_the_whole_stage():
    m = resolve_model("resnet18")
    trace = trace_model(m.module, 64, 3)
    dims = dimensions(trace.layers, trace.frozen_dims)
    names = lambda idx: {trace.layers[i].name for i in idx}  # noqa: E731
    stage4 = next(d for d in dims if "layer4.0.downsample.0" in names(d.producers))
    assert names(stage4.producers) == {"layer4.0.conv2", "layer4.0.downsample.0",
                                       "layer4.1.conv2"}
    assert names(stage4.consumers) == {"layer4.1.conv1", "fc"}
    assert {"layer4.0.add", "layer4.1.add", "layer4.0.bn2"} <= names(stage4.passthrough)


class _SplitNet(torch.nn.Module):
    """FasterNet's partial convolution: a conv on the first 8 channels of a split with its
    sizes in the code, the rest passed by, joined again."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis
        self.a, self.bn = torch.nn.Conv2d(3, 32, 3), torch.nn.BatchNorm2d(32)
        self.b = torch.nn.Conv2d(8 if axis == 1 else 32, 8 if axis == 1 else 32, 3, padding=1)
        self.c, self.head = torch.nn.Conv2d(32, 16, 1), torch.nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x)))
        if self.axis == 1:
            x1, x2 = torch.split(x, [8, 24], dim=1)
            x = torch.cat([self.b(x1), x2], 1)
        else:  # along the width: every piece keeps the channels
            x1, x2 = torch.split(x, [7, 7], dim=3)
            x = self.b(x1) + x2
        return self.head(self.c(x).mean((2, 3)))


def test_a_split_along_channels_freezes_them_and_one_along_the_width_does_not():
    def prunable(axis):
        trace = trace_model(_SplitNet(axis), 16, 3)
        return sorted(sorted(trace.layers[i].name for i in d.producers)
                      for d in dimensions(trace.layers, trace.frozen_dims))

    # its sizes are in the code: pruning conv a would break the split at run time
    assert prunable(1) == [["c"]]
    # b maps a's channels onto themselves (its output is added to a's other piece)
    assert prunable(3) == [["a"], ["c"]]


def test_a_fused_depthwise_key_shrinks_its_groups_with_its_channels():
    """A runtime table's keys carry the fused epilogue (``conv2d+bn+hardswish``); a first
    version treated such a depthwise key as a plain conv, and the plan of the mobile demo
    teacher on an ONNX Runtime table looked up groups 128 on 4 channels."""
    from dataclasses import replace

    from hwprune.profiler.coupling import is_depthwise
    from hwprune.zoo import build_demo

    trace = trace_model(build_demo(arch="mobile"), 32, 1)
    key = next(r.key for r in trace.layers if r.key.groups > 1)
    fused = replace(key, op="conv2d+bn+hardswish")
    assert is_depthwise(fused.op, fused.c_in, fused.groups)
    small = shrink(fused, key.c_in - 4, "both")
    assert (small.c_in, small.c_out, small.groups, small.op) == (4, 4, 4, fused.op)
    assert not is_depthwise("conv2d+bn+relu", 64, 1) and not is_depthwise("add", 64, 64)
