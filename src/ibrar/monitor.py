"""The per-epoch robustness signal: clean and PGD accuracy on a fixed, class-balanced test subset.

Its numbers are those of `ibrar.evaluate` with `PGD(eps, alpha=eps/4, steps)` at the evaluation's batch size
(the same rules: eval mode, only clean-correct examples attacked, a clean mistake counts as broken), computed
as one large batch: the subset lives on the device, and each block of `batch_size` attacked examples gets the
random start that the evaluation's batch would draw. Summed over ranks under DDP; two host reads per epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ibrar.attacks.base import ce_loss
from ibrar.attacks.pgd import pgd_linf
from ibrar.data import ImageData
from ibrar.data.loader import balanced_subset
from ibrar.distributed import all_reduce_sum
from ibrar.modes import eval_mode


class Monitor:
    """Each rank takes every world_size-th example of the subset; the accuracies are over all of them.

    `chunk` bounds how many examples run at once (None: the whole subset), for memory only: any chunk gives
    the same numbers.
    """

    def __init__(self, test_data: ImageData, n: int, eps: float, pgd_steps: int, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, chunk: int | None = None) -> None:
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk: expected a positive number of examples or None, got {chunk}")
        n = min(n, len(test_data))
        self.total = n  # over all ranks together
        chosen = balanced_subset(test_data.labels, n, seed)[rank::world_size] if n else torch.zeros(0).long()
        self.images = (test_data.images[chosen].float() / 255).to(device)  # converted once, kept on the device
        self.labels = test_data.labels[chosen].long().to(device)
        self.eps, self.pgd_steps, self.batch_size = eps, pgd_steps, batch_size
        self.seed, self.device = seed + rank, torch.device(device)
        self.chunk = chunk

    @property
    def enabled(self) -> bool:
        return len(self.labels) > 0

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if not self.enabled:
            return {}
        with eval_mode(model):
            correct = self._logits(model, self.images).argmax(1) == self.labels
            robust = self._robust(model, correct).sum() if self.pgd_steps else torch.zeros_like(correct.sum())
        correct_n, robust_n = all_reduce_sum(torch.stack([correct.sum(), robust]).float()).tolist()
        out = {"test_clean_acc": correct_n / self.total}
        if self.pgd_steps:
            out[f"test_pgd{self.pgd_steps}_acc"] = robust_n / self.total
        return out

    def _slices(self, total: int) -> list[slice]:
        step = self.chunk or max(total, 1)
        return [slice(i, i + step) for i in range(0, total, step)]

    @torch.no_grad()
    def _logits(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.cat([model(x[part]) for part in self._slices(len(x))])

    def _robust(self, model: nn.Module, correct: Tensor) -> Tensor:
        """Per clean-correct example: still classified right after PGD from the evaluation's random start."""
        todo = correct.nonzero().squeeze(1)  # a host read: how many examples the attack runs on
        x, y = self.images[todo], self.labels[todo]
        if len(todo) == 0:
            return torch.zeros(0, dtype=torch.bool, device=self.device)
        start = (x + self.eps * (2 * self._start_noise(x) - 1)).clamp(0.0, 1.0)
        robust = []
        for part in self._slices(len(x)):
            x_adv = pgd_linf(model, x[part], y[part], ce_loss, self.eps, self.eps / 4, self.pgd_steps,
                             x_init=start[part])
            robust.append(self._logits(model, x_adv).argmax(1) == y[part])
        return torch.cat(robust)

    def _start_noise(self, x: Tensor) -> Tensor:
        """The uniform noise of PGD's random start, as `evaluate` draws it: the attack reseeds its generator for
        every batch of `batch_size`, so every full block gets the same draw and the last block its own."""

        def draw(rows: int) -> Tensor:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            return torch.rand((rows, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)

        full, last = divmod(len(x), self.batch_size)
        blocks = [draw(self.batch_size)] * full + ([draw(last)] if last else [])
        return torch.cat(blocks)
