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
