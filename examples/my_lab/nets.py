"""Your own network: any nn.Module that maps (N, C, H, W) images to (N, num_classes) logits."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Two conv-BN-ReLU blocks, global average pooling and a linear head; any image size."""

    head_name = "head"  # optional: names the new head, for param_groups.backbone_lr_mult

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
