"""The training set resident on the training device: each batch is gathered, cropped, flipped and converted
there in one gather, with no host copy per batch, and equals `BatchLoader`'s batch element for element.

The uint8 examples (about 150 MB for CIFAR-10; with the crop's zero padding about 240 MB) move to the device
once. The epoch's order is still drawn on the CPU and moved once per epoch; the augmentation's draws are made
by the same generator, in the same order and shapes, as `BatchLoader` makes them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ibrar.data.augment import crop_flip_draws, crop_flip_grid, gather_crops
from ibrar.data.loader import AUGMENT_PADDING, BatchLoader


class ResidentLoader(BatchLoader):
    """A `BatchLoader` (same arguments, same batches) whose examples live on `device`.

    With augmentation the stored copy is zero-padded once, so that a batch is one gather of uint8 crops
    followed by the conversion to float; zero padding after the conversion gives the same numbers, since
    0 / 255 is 0.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pin = False  # nothing is copied per batch
        self.padding = AUGMENT_PADDING if self.augment else 0
        self.height, self.width = int(self.images.shape[-2]), int(self.images.shape[-1])
        images = self.images.to(self.device)
        pad = self.padding
        self.images = F.pad(images, (pad, pad, pad, pad)) if pad else images
        self.labels = self.labels.to(self.device)

    def _order(self, epoch: int) -> torch.Tensor:
        order = super()._order(epoch)
        if self.device.type == "cuda":  # pinned, so that the copy neither waits for the GPU nor blocks the host
            return order.pin_memory().to(self.device, non_blocking=True)
        return order.to(self.device)

    def _batch(self, index: torch.Tensor,
               augment_generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        if augment_generator is None:
            x = self.images[index]
        else:
            shifts, flips = crop_flip_draws(index.numel(), self.padding, augment_generator, self.device)
            rows, cols = crop_flip_grid(shifts, flips, self.height, self.width)
            x = gather_crops(self.images, index, rows, cols)
        return x.float().div_(255), self.labels[index]
