import torch
import torchvision

from hwprune.profiler.keyspace import trace_model
from hwprune.pruner import build_graph, check_matches, find_dims, out_channels, remove_channels
from hwprune.zoo import shrink_to


def _dims(model, size=64):
    model.eval()
    trace = trace_model(model, size, 3)
    graph = build_graph(model, torch.zeros(1, 3, size, size))
    return trace, graph, find_dims(model, graph, trace)


def test_resnet18_residual_channels_form_one_group():
    model = torchvision.models.resnet18()
    trace, _, dims = _dims(model)
    check_matches(dims, trace)  # Torch-Pruning and the latency model agree on every group
    by_root = {d.root: d for d in dims}
    stage1 = next(d for d in dims if "conv1" in d.producers)
    assert set(stage1.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert set(stage1.gate_sites) == {"bn1", "layer1.0.bn2", "layer1.1.bn2"}
    stage2 = next(d for d in dims if "layer2.0.downsample.0" in d.producers)
    assert set(stage2.producers) == {"layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2"}
    inner = by_root["layer3.1.conv1"]
    assert inner.producers == ("layer3.1.conv1",) and inner.channels == 256
    # 4 stages + 8 block-internal convs; the classifier is never a producer
    assert len(dims) == 12 and not any("fc" in d.producers for d in dims)


def test_mobilenet_v2_depthwise_conv_follows_its_expansion():
    model = torchvision.models.mobilenet_v2()
    trace, _, dims = _dims(model)
    check_matches(dims, trace)
    d = next(d for d in dims if "features.2.conv.0.0" in d.producers)
    assert d.producers == ("features.2.conv.0.0",)  # the depthwise conv is not a producer
    assert set(d.gate_sites) == {"features.2.conv.0.1", "features.2.conv.1.1"}
    assert d.channels == 96


def test_removal_gives_a_smaller_model_with_the_recorded_channels():
    model = torchvision.models.resnet18()
    trace, graph, dims = _dims(model)
    stage1 = next(d for d in dims if "conv1" in d.producers)
    inner = next(d for d in dims if d.root == "layer2.0.conv1")
    remove_channels(model, graph, stage1, list(range(0, 64, 4)))  # 16 channels
    remove_channels(model, graph, inner, [1, 5, 9])
    spec = out_channels(model, dims)
    assert spec["conv1"] == spec["layer1.1.conv2"] == 48 and spec["layer2.0.conv1"] == 125
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 1000)
    assert model.layer2[0].conv1.in_channels == 48 and model.layer2[0].conv2.in_channels == 125
    # A fresh resnet18 cut to the spec has the same shapes (what a checkpoint reload does)
    fresh = shrink_to(torchvision.models.resnet18().eval(), spec, torch.zeros(1, 3, 64, 64))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_never_empties_a_dimension():
    model = torchvision.models.resnet18()
    _, graph, dims = _dims(model)
    d = dims[0]
    before = out_channels(model, dims)
    try:
        remove_channels(model, graph, d, list(range(d.channels)))
    except ValueError as exc:
        assert "empty" in str(exc)
    else:
        raise AssertionError("removing every channel must be refused")
    assert out_channels(model, dims) == before
