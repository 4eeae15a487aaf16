"""The PyTorch examples' MNIST network, generalised to any input size and channel count."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigError


class MNISTCNN(nn.Module):
    """conv3x3(32) - conv3x3(64) - maxpool - dropout - linear(128) - dropout - linear(classes)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
        hidden: int = 128, dropout: float = 0.25,
    ) -> None:
        super().__init__()
        pooled = (image_size - 4) // 2
        if pooled < 1:
            raise ConfigError(f"MNISTCNN needs images of at least 6x6 pixels, got "
                              f"data.image_size={image_size}: raise it.")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(dropout), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * pooled * pooled, hidden), nn.ReLU(inplace=True),
            nn.Dropout(2 * dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
