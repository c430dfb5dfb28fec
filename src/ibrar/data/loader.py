"""Epoch-deterministic batches from an in-memory `ImageData`, converted and augmented on the target device.

The order and the augmentation of epoch e depend only on (seed, e), so a run resumed from a
checkpoint sees exactly the batches it would have seen without stopping.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ibrar.data.augment import random_crop_flip
from ibrar.data.readers import ImageData

AUGMENT_PADDING = 4  # the random crop's zero padding, in pixels (the CIFAR standard)


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, stream)."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1)
    )


def balanced_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """`size` indices, as equal per class as the classes allow, chosen by `seed` alone; sorted."""
    if not 0 < size <= labels.numel():
        raise ValueError(f"subset: expected an integer in [1, {labels.numel()}], got {size}")
    generator = torch.Generator().manual_seed(derived_seed(seed, 0x5B5E7))
    order = torch.randperm(labels.numel(), generator=generator)
    shuffled = labels[order]
    # Rank of each example within its class in the shuffled order; taking ranks 0, 1, 2, ... in
    # turn takes one example per class per round, which is balanced until a class runs out.
    rank = torch.empty_like(order)
    for cls in shuffled.unique():
        where = (shuffled == cls).nonzero().squeeze(1)
        rank[where] = torch.arange(where.numel())
    by_round = torch.argsort(rank * labels.numel() + torch.arange(labels.numel()), stable=True)
    return order[by_round[:size]].sort().values


class BatchLoader:
    """Iterate `(x, y)` batches: x float32 in [0, 1] on `device`, y int64 on `device`.

    Each `iter()` runs one epoch and then moves to the next; `set_epoch(e)` picks the epoch
    explicitly. Shuffling and augmentation (random crop with 4-pixel padding, horizontal flip)
    are pure functions of (seed, epoch). `indices` restricts the data first; `subset` then keeps a
    fixed, seeded, class-balanced choice of that many examples.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        shuffle: bool,
        augment: bool,
        seed: int,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        subset: int | None = None,
        indices: torch.Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        chosen = torch.arange(len(data)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if chosen.dim() != 1 or (
            chosen.numel() and not (0 <= int(chosen.min()) and int(chosen.max()) < len(data))
        ):
            raise ValueError(f"indices: expected a 1-d tensor of indices in [0, {len(data)}), got {chosen}")
        if subset is not None:
            chosen = chosen[balanced_subset(data.labels[chosen], subset, seed)]
        if chosen.numel() == 0:
            raise ValueError("indices: expected at least one example, got none")
        whole = indices is None and subset is None  # share the tensors rather than copy the whole dataset
        self.images = data.images if whole else data.images[chosen]
        self.labels = data.labels if whole else data.labels[chosen]
        self.classes = list(data.classes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.epoch = 0
        self._pin = self.device.type == "cuda"
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
        # Distributed: every global batch (batch_size * world_size examples of one shared order) is cut into
        # one contiguous slice per rank, so N ranks see exactly what one process with the global batch sees.
        self.rank = rank
        self.world_size = world_size
        if world_size > 1:
            self.drop_last = True

    @property
    def num_examples(self) -> int:
        return self.labels.numel()

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_examples // global_batch
        return -(-self.num_examples // global_batch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (order and augmentation depend on (seed, epoch) only)."""
        if epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self._order(epoch)
        augment_generator = self._augment_generator(epoch)
        global_batch = self.batch_size * self.world_size
        for b in range(len(self)):
            start = b * global_batch + self.rank * self.batch_size
            yield self._batch(order[start : start + self.batch_size], augment_generator)

    def _order(self, epoch: int) -> torch.Tensor:
        """The epoch's order of the examples, drawn on the CPU from (seed, epoch)."""
        if not self.shuffle:
            return torch.arange(self.num_examples)
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.randperm(self.num_examples, generator=generator)

    def _augment_generator(self, epoch: int) -> torch.Generator | None:
        """The epoch's augmentation stream, on the training device (one per rank under DDP); None without."""
        if not self.augment:
            return None
        stream = (self.seed, epoch, 1) if self.world_size == 1 else (self.seed, epoch, 1, self.rank)
        return torch.Generator(device=self.device).manual_seed(derived_seed(*stream))

    def _batch(self, index: torch.Tensor,
               augment_generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather on the host, copy to the device, convert there, then augment there."""
        x, y = self.images[index], self.labels[index]
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
        x = x.to(self.device, non_blocking=True).float().div_(255)
        y = y.to(self.device, non_blocking=True)
        if augment_generator is not None:
            x = random_crop_flip(x, padding=AUGMENT_PADDING, flip=True, generator=augment_generator)
        return x, y
