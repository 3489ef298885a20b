"""A three-block CNN for scikit-learn's 8x8 digits: the smoke workload's model, sized for CI."""

from __future__ import annotations

from torch import Tensor, nn


class DigitsCNN(nn.Module):
    """conv-BN-ReLU x3 (16/32/64 channels), one 2x2 max-pool, global average pool, linear head. Input (N, 1, 8, 8)."""

    def __init__(self, num_classes: int = 10, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            _block(1, c1),
            _block(c1, c2),
            nn.MaxPool2d(2),
            _block(c2, c3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
