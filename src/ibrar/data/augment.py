"""Batched augmentation on the batch's own device: one gather per batch instead of a Python loop per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop from a zero-padded copy plus random horizontal flip, independently per image.

    `images` is (N, C, H, W), float or uint8; the result has the same shape, dtype and device.
    Draws come from `generator` (on any device), so a seeded generator gives the same batch back.
    """
    if images.dim() != 4:
        raise ValueError(f"images: expected a 4-d tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding: expected a non-negative integer, got {padding}")
    n, _, height, width = images.shape
    draw_device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=draw_device)
    flips = torch.rand(n, generator=generator, device=draw_device) < 0.5
    shifts, flips = shifts.to(images.device), flips.to(images.device)
    if not flip:
        flips = torch.zeros_like(flips)

    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = shifts[0, :, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = torch.arange(width, device=images.device).expand(n, width)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + shifts[1, :, None]  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
