"""The embedded demo classifier: a small BatchNorm/residual CNN for scikit-learn's digits.

Defined here once; the profiler, the synthesizer and the pruner all build it from
this module. The 8x8 digits are upsampled to 32 px and the width is 64 because
conv work must dominate the latency, or pruning cannot reach tight budgets:
measured on the 2-core development machine at batch 1, a 6-conv net at 16 px
and width 32 ran 0.28 ms against a ~0.12 ms floor of fixed per-op overhead,
while at 32 px and width 64 it ran 1.32 ms (width 16: 0.34 ms).
"""

from __future__ import annotations

import torch
from torch import nn

DEMO_INPUT_SIZE = 32  # digits are 8x8, upsampled so conv work dominates latency
DEMO_CHANNELS = 1
DEMO_CLASSES = 10


def _conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (1x1 conv-BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv_bn(c_out, c_out)
        self.shortcut = (
            _conv_bn(c_in, c_out, stride, kernel=1)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu1(self.conv1(x)))
        out += self.shortcut(x)
        return self.relu2(out)


class DemoNet(nn.Module):
    """Stem conv, a residual block at full resolution, a strided residual block, linear head.

    Six convolutions, seven BatchNorms, two residual additions: every coupling
    the pruner must handle on real ResNets, small enough to train on 2 cores.
    """

    def __init__(self, width: int = 64, num_classes: int = DEMO_CLASSES,
                 in_channels: int = DEMO_CHANNELS) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        self.stem_relu = nn.ReLU(inplace=True)
        self.block1 = ResidualBlock(width, width)
        self.block2 = ResidualBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem(x))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excitation: a pooled 1x1 bottleneck scales the channels."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expansion, 3x3 depthwise, squeeze-excitation, 1x1
    projection, and a shortcut when the shape is kept."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.expand = _conv_bn(c_in, hidden, kernel=1)
        self.act1 = nn.Hardswish()
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden))
        self.act2 = nn.Hardswish()
        self.se = SqueezeExcite(hidden, max(8, hidden // 4))
        self.project = _conv_bn(hidden, c_out, kernel=1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.act2(self.depthwise(self.act1(self.expand(x))))))
        return out + x if self.residual else out


class MobileDemoNet(nn.Module):
    """A MobileNetV3-like digits net: depthwise and squeeze-excitation layers, whose share of
    the latency on a CPU is far above their share of the FLOPs (memory-bound, many small
    ops), the regime in which a FLOPs budget misjudges what removing a filter saves.

    Stem conv, three inverted-residual blocks (the second strided), linear head."""

    def __init__(self, width: int = 32, num_classes: int = DEMO_CLASSES,
                 in_channels: int = DEMO_CHANNELS, expansion: int = 4) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        self.stem_act = nn.Hardswish()
        self.block1 = InvertedResidual(width, expansion * width, width)
        self.block2 = InvertedResidual(width, expansion * width, 2 * width, stride=2)
        self.block3 = InvertedResidual(2 * width, 2 * expansion * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


ARCHS = {"residual": DemoNet, "mobile": MobileDemoNet}


def build_demo(width: int = 64, num_classes: int = DEMO_CLASSES,
               arch: str = "residual") -> nn.Module:
    """``arch``: "residual" (the demo's teacher) or "mobile" (depthwise and
    squeeze-excitation; table9's second regime)."""
    if arch not in ARCHS:
        raise ValueError(f"demo arch '{arch}': choose {' or '.join(ARCHS)}")
    return ARCHS[arch](width=width, num_classes=num_classes)
