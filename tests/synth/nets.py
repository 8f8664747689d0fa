"""Small real models for the synthesis tests (run in well under a second on a CPU core)."""

import torch
from torch import nn


def tiny_bn_net(channels: int = 3, seed: int = 0) -> nn.Module:
    """Two conv/BN/ReLU stages and a head, with BN statistics that noise does not match
    (as a trained teacher's would not), frozen like synthesize() freezes a teacher."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
