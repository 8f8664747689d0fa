"""The demo's second teacher (depthwise and squeeze-excitation, table9's second regime): it
builds from its checkpoint, and every dimension the pruner finds has one latency dimension."""

import pytest
import torch

from hwprune.profiler.keyspace import trace_model
from hwprune.pruner.groups import build_graph, check_matches, find_dims, remove_channels
from hwprune.zoo import build_demo, load_checkpoint, save_checkpoint


def test_the_mobile_demo_round_trips_through_its_checkpoint(tmp_path):
    net = build_demo(width=8, arch="mobile").eval()
    assert any(m.groups > 1 for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    path = save_checkpoint(net, tmp_path / "m.pt", "demo", {"width": 8, "arch": "mobile"})
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(load_checkpoint(path).module(x), net(x))
    with pytest.raises(ValueError, match="residual or mobile"):
        build_demo(arch="vgg")


def test_the_pruner_scores_and_removes_every_dimension_of_the_mobile_demo():
    net = build_demo(width=8, arch="mobile").eval()
    example = torch.randn(1, 1, 32, 32)
    trace = trace_model(net, 32, 1)
    graph = build_graph(net, example)
    dims = find_dims(net, graph, trace)
    check_matches(dims, trace)
    # the trunk (stem + block1, block2-3) and each block's expansion and SE squeeze
    assert len(dims) >= 6
    for d in dims:
        remove_channels(net, graph, d, [0, 1])
    assert net(example).shape == (1, 10)
