"""Batched augmentation on the batch's own device: one gather per batch instead of a Python loop per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip_draws(n: int, padding: int, generator: torch.Generator | None,
                    device: torch.device | str) -> tuple[Tensor, Tensor]:
    """The random draws of `random_crop_flip` for n images, in its order: shifts (2, n), then flips (n,).

    They are made on the generator's device (the CPU without one) and moved to `device`; a loader that
    gathers its crops some other way makes these same draws and gets the same batch.
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=draw_device)
    flips = torch.rand(n, generator=generator, device=draw_device) < 0.5
    return shifts.to(device), flips.to(device)


def crop_flip_grid(shifts: Tensor, flips: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Per image, the rows (N, H) and the columns (N, W) of the padded image that its crop (flipped or not) reads."""
    n = shifts.shape[1]
    rows = shifts[0, :, None] + torch.arange(height, device=shifts.device)
    cols = torch.arange(width, device=shifts.device).expand(n, width)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + shifts[1, :, None]
    return rows, cols


def gather_crops(padded: Tensor, index: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """padded[index[i], :, rows[i], cols[i]] for every i: one gather for the whole batch."""
    channel = torch.arange(padded.shape[1], device=padded.device)[None, :, None, None]
    return padded[index[:, None, None, None], channel, rows[:, None, :, None], cols[:, None, None, :]]


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
    shifts, flips = crop_flip_draws(n, padding, generator, images.device)
    if not flip:
        flips = torch.zeros_like(flips)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows, cols = crop_flip_grid(shifts, flips, height, width)
    return gather_crops(padded, torch.arange(n, device=images.device), rows, cols)
