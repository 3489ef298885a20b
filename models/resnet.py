"""A small ResNet-style image classifier (CIFAR-sized: 3x32x32 in, 10 logits out).

Three stages of residual basic blocks (16, 32, 64 channels) in the manner of He et al.'s CIFAR
ResNets; about 78k parameters, so a CPU serves it in about a millisecond per image. Weights are
random (seeded) until a trained checkpoint is supplied.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, channels = [], widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock(channels, width, stride=1 if index == 0 else 2))
            channels = width
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))


def build(seed: int = 0) -> SmallResNet:
    """The model in eval mode with seeded random weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = SmallResNet().eval()
    torch.random.set_rng_state(generator_state)
    return model
