"""A tiny CNN with the same metadata as the paper's models, for tests and CPU smoke runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ibrar.models.registry import make_normalization, register_model, scaled


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU-pool blocks, one hidden FC layer, a classifier."""

    ib_layers = ("block1", "block2", "fc1")
    robust_layers = ("block2", "fc1")
    last_conv = "block2"
    penultimate = "fc1"

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        input_size: int = 32,
        channels: tuple[int, int] = (16, 32),
        hidden: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if input_size % 4 != 0:
            raise ValueError(f"input_size: expected a multiple of 4 (two 2x poolings), got {input_size}")
        c1, c2 = (scaled(c, width) for c in channels)
        fc = scaled(hidden, width)
        self.normalize = make_normalization(mean, std)
        self.block1 = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(True), nn.MaxPool2d(2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(True), nn.MaxPool2d(2)
        )
        self.last_conv_channels = c2
        side = input_size // 4
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(c2 * side * side, fc), nn.BatchNorm1d(fc), nn.ReLU(True))
        self.classifier = nn.Linear(fc, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.normalize(x)))
        return self.classifier(self.fc1(self.flatten(x)))


@register_model("small_cnn")
def small_cnn(num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object) -> SmallCNN:
    """The tiny CNN; forward of a batch of 8 at 32x32 takes milliseconds on a CPU."""
    return SmallCNN(num_classes=num_classes, width=width, input_size=input_size, **kwargs)
