"""A small CNN for 28x28 grey images (Fashion-MNIST): the vision workload's model, and what the server will serve."""

from __future__ import annotations

from torch import Tensor, nn


class FashionCNN(nn.Module):
    """2 x (conv3x3, BatchNorm, ReLU, 2x2 max-pool) with 32/64 channels, then FC 128 and a 10-way head.

    Input (N, 1, 28, 28), normalised pixels; output logits (N, 10).
    """

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (32, 64), hidden: int = 128) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(_block(1, c1), _block(c1, c2), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)
    )
