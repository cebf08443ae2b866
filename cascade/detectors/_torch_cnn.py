"""The pure compute of :class:`cascade.detectors.image.PixelCNN`: a small convolutional network.

Imported only when a CNN is fitted or loaded, so ``import cascade.detectors`` stays free of torch.

>>> import torch
>>> ConvNet(channels=8, hidden_units=32, height=28, width=28, n_classes=2)(torch.zeros(4, 1, 28, 28)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """Two conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool; ``channels`` then ``2 * channels``
    filters) and a two-layer head; returns class logits ``(n, n_classes)``.

    Input is ``(n, 1, height, width)`` pixel intensities scaled to [0, 1].
    """

    def __init__(self, channels: int, hidden_units: int, height: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(1, channels),
            _conv_block(channels, 2 * channels),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * channels * (height // 4) * (width // 4), hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, n_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
