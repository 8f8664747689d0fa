"""A user's own network, written the way people write them: functional activations, two
branches joined by torch.cat, a squeeze-excitation gate ``y * torch.sigmoid(...)`` and an
in-place residual ``+=``. Built by ``tests.zoo.custom_nets:build_branchy``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Branchy(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.left = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.left_bn = nn.BatchNorm2d(width)
        self.right = nn.Conv2d(width, width, 1, bias=False)
        self.right_bn = nn.BatchNorm2d(width)
        self.squeeze = nn.Conv2d(2 * width, width // 2, 1)
        self.excite = nn.Conv2d(width // 2, 2 * width, 1)
        self.mix = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.mix_bn = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        y = torch.cat([F.relu(self.left_bn(self.left(x))),
                       F.relu(self.right_bn(self.right(x)))], dim=1)
        gate = self.excite(F.relu(self.squeeze(y.mean((2, 3), keepdim=True))))
        y = y * torch.sigmoid(gate)
        z = self.mix_bn(self.mix(y))
        z += y
        return self.head(F.relu(z).mean((2, 3)))


def build_branchy(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    return Branchy(num_classes, in_channels, width)


def not_a_module() -> int:
    return 3


def build_mlp() -> nn.Module:
    """No convolution: nothing for a conv latency table to hold."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def build_no_bn() -> nn.Module:
    """Convolutions without BatchNorm: no statistics for DeepInversion to match."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))
