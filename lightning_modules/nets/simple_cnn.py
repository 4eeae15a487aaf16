"""The PyTorch CIFAR-10 tutorial network, generalised to any input size and channel count."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigError


class SimpleCNN(nn.Module):
    """conv5x5(6) - pool - conv5x5(16) - pool - linear(120) - linear(84) - linear(classes)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"SimpleCNN needs images of at least 16x16 pixels, got "
                              f"data.image_size={image_size}: raise it.")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
