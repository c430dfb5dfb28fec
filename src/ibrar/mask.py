"""The channel mask of IB-RAR ("removing unnecessary features", paper Eq. 3, METHOD.md section 3).

Channels of the last convolutional layer whose HSIC with the labels is lowest carry little label
information; zeroing them removes features an attacker could use. Two behaviours:

- rule "paper" (default): drop the lowest `drop_fraction` of channels by HSIC(f_c, Y); the mask is a buffer,
  refreshed every `refresh_every` training batches, fitted once more on training data after training, saved
  in `state_dict` and applied at evaluation.
- rule "official" (the authors' code): on every `refresh_every`-th batch of an epoch but its first (their
  `batch_idx % 10 == 0 and batch_idx != 0`, once `epoch_batches` is set), drop the `official_count`
  lowest HSIC(f_c, Y) and the `official_count` highest HSIC(f_c, X), scored on each training forward pass of
  that batch from its own features (TRADES and MART run two: clean and adversarial, as the authors' scripts
  mask both; the step's post-step forward is not one of them); never saved, never applied at evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ibrar.hsic import (
    ESTIMATORS,
    Estimator,
    KernelKind,
    combine,
    gaussian_kernel,
    kernel_matrix,
    nocco_low_rank,
    one_hot_labels,
    prepare,
)
from ibrar.modes import eval_mode
from ibrar.taps import find_modules

MaskRule = Literal["paper", "official"]


def _identity(t: Tensor) -> Tensor:
    return t


class ChannelMask(nn.Module):
    """A 0/1 mask over the channels of one layer's output, applied by a forward hook on that layer."""

    def __init__(
        self,
        num_channels: int,
        num_classes: int,
        rule: MaskRule = "paper",
        drop_fraction: float = 0.05,
        official_count: int = 10,
        refresh_every: int = 10,
        at_eval: bool | None = None,
        enabled: bool = True,
        estimator: Estimator = "nocco",
        label_kernel: KernelKind = "linear",
        sigma: float = 5.0,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels: expected a positive channel count, got {num_channels}")
        if rule not in ("paper", "official"):
            raise ValueError(f"rule: expected 'paper' or 'official', got {rule!r}")
        if not 0.0 <= drop_fraction < 1.0:
            raise ValueError(f"drop_fraction: expected a value in [0, 1), got {drop_fraction}")
        if official_count < 0 or (rule == "official" and 2 * official_count >= num_channels):
            raise ValueError(f"official_count: expected 0 <= 2 * count < num_channels={num_channels}, "
                             f"got {official_count}")
        if refresh_every < 1:
            raise ValueError(f"refresh_every: expected a positive number of batches, got {refresh_every}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
        self.num_channels = num_channels
        self.num_classes = num_classes
        self.rule = rule
        self.drop_fraction = drop_fraction
        self.official_count = official_count
        self.refresh_every = refresh_every
        self.at_eval = (rule == "paper") if at_eval is None else at_eval
        self.enabled = enabled
        self.estimator = estimator
        self.label_kernel = label_kernel
        self.sigma = sigma
        # Under DDP each rank scores its own batch; `reduce` (a mean over ranks) gives all ranks one mask.
        self.reduce = reduce if reduce is not None else _identity
        self.register_buffer("mask", torch.ones(num_channels))
        # The batch counter is state: a resumed run must refresh on the same batches.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending: tuple[Tensor, Tensor] | None = None
        self._collected: list[Tensor] | None = None
        self._count = 0  # a host copy of `step`, so that counting batches never reads the device
        # Batches per epoch (the Trainer sets it): the official rule counts its refreshes within each epoch.
        self.epoch_batches: int | None = None

    # ---- scoring -------------------------------------------------------------------------------------

    def channel_scores(self, features: Tensor, y: Tensor, x: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """HSIC(f_c, Y) for every channel c (and HSIC(f_c, X) when x is given), in one batched computation.

        Always in float32, outside any autocast: the hook scores inside the step's forward, and bf16
        kernels would change the scores by several percent and drop other channels than float32 does.
        """
        if features.dim() < 2 or features.shape[1] != self.num_channels:
            raise ValueError(f"features: expected shape (m, {self.num_channels}, ...), got {tuple(features.shape)}")
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self._scores(features.detach().float(), y, None if x is None else x.detach().float())

    def _scores(self, f: Tensor, y: Tensor, x: Tensor | None) -> tuple[Tensor, Tensor | None]:
        per_channel = f.reshape(f.shape[0], f.shape[1], -1).transpose(0, 1).contiguous()  # (C, m, d_c)
        kc = gaussian_kernel(per_channel, self.sigma)  # (C, m, m)
        onehot = one_hot_labels(y, self.num_classes)
        if x is None and self.estimator == "nocco" and self.label_kernel == "linear":
            # The label side has rank <= num_classes: solving with that many right-hand sides is cheaper.
            return nocco_low_rank(kc, onehot), None
        pc = prepare(kc, self.estimator)
        py = prepare(kernel_matrix(onehot, self.label_kernel, self.sigma).matrix, self.estimator)
        score_y = combine(pc, py, self.estimator).float()
        score_x = None
        if x is not None:
            px = prepare(kernel_matrix(x, "gaussian", self.sigma).matrix, self.estimator)
            score_x = combine(pc, px, self.estimator).float()
        return score_y, score_x

    @property
    def paper_count(self) -> int:
        """How many channels the paper rule drops: the fraction of the channels, rounded down as a decimal
        (0.29 of 100 is 29, where the binary product 28.999999999999996 floored to 28)."""
        return int(Fraction(str(self.drop_fraction)) * self.num_channels)

    def select(self, score_y: Tensor, score_x: Tensor | None = None) -> Tensor:
        """The 0/1 mask the rule picks from the scores."""
        # By rank rather than by writing through an index: a CPU scalar written into a CUDA tensor is a
        # host-to-device copy, which stalls the step (train.forbid_host_sync reports it).
        def lowest(scores: Tensor, n: int, descending: bool = False) -> Tensor:
            rank = torch.argsort(torch.argsort(scores, descending=descending, stable=True), stable=True)
            return rank < n

        if self.rule == "paper":
            drop = lowest(score_y, self.paper_count)
        else:
            n = self.official_count
            drop = lowest(score_y, n)
            if score_x is not None:
                drop = drop | lowest(score_x, n, descending=True)
        return (~drop).float()

    # ---- training-time behaviour ---------------------------------------------------------------------

    def observe(self, x: Tensor, y: Tensor) -> None:
        """Tell the mask about the next training batch; on every `refresh_every`-th batch it rescores."""
        if not self.enabled:
            return
        # kept for the whole step (the official rule scores each of its training forwards), dropped at the next
        self._pending = (x, y) if self._due(self._count) else None
        self._count += 1
        self.step += 1

    def end_batch(self) -> None:
        """The batch's training forwards are done: a forward before the next `observe` (the step's post-step
        forward) is not rescored, and the official rule leaves it unmasked, as the authors' model leaves a
        forward for which their script set no targets."""
        self._pending = None

    @property
    def refresh_due(self) -> bool:
        """Whether the next `observe` rescores: read from the host copy of the batch counter, never the device."""
        return self.enabled and self._due(self._count)

    def _due(self, count: int) -> bool:
        if self.rule == "official" and self.epoch_batches:
            index = count % self.epoch_batches  # the batch's index in its epoch: the authors' batch_idx
            return index != 0 and index % self.refresh_every == 0
        return count % self.refresh_every == 0

    @property
    def batches_counted(self) -> int:
        """The host copy of the batch counter (what `refresh_due` reads)."""
        return self._count

    def rewind(self, batches_counted: int) -> None:
        """Undo the host side of `observe` calls that did not become steps (a CUDA graph capture that failed): the
        counter goes back and the batch kept for rescoring is dropped (`ibrar.graph_step`)."""
        self._count = batches_counted
        self._pending = None

    def count_replayed_batch(self) -> None:
        """A batch observed inside a replayed CUDA graph: the graph moved `step` on the device; this moves its host
        copy the same way, as `observe` would have (`ibrar.graph_step`)."""
        if self.enabled:
            self._count += 1

    def attach(self, model: nn.Module, layer: str) -> RemovableHandle:
        """Apply the mask to the output of `layer` (a name from `model.named_modules()`)."""
        module = find_modules(model, [layer])[layer]
        return module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, _inputs: object, output: Tensor) -> Tensor | None:
        if not self.enabled:
            return None
        if self._collected is not None:
            self._collected.append(output.detach())
            return None
        if module.training:
            if self._pending is not None:
                x, y = self._pending
                if self.rule == "paper":  # rescored once per refresh batch, on its first training forward
                    self._pending = None
                score_y, score_x = self.channel_scores(output, y, x if self.rule == "official" else None)
                score_y = self.reduce(score_y)
                score_x = self.reduce(score_x) if score_x is not None else None
                new_mask = self.select(score_y, score_x).to(self.mask.dtype)
                if self.rule == "official":  # this forward only, from its own features
                    return self._masked(output, new_mask)
                self.mask.copy_(new_mask)
            return self._masked(output, self.mask) if self.rule == "paper" else None
        return self._masked(output, self.mask) if self.at_eval else None

    @staticmethod  # not `_apply`: that name is nn.Module's, and .to(device) calls it
    def _masked(output: Tensor, mask: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return output * mask.to(output.dtype).view(shape)

    # ---- after training ------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
        """Final fit (paper rule): score every channel on the given training batches, average, set the mask.

        The model must already carry this mask (`attach`); it runs in eval mode and sees unmasked features.
        Returns the averaged HSIC(f_c, Y) scores.
        """
        total, count = None, 0
        try:
            with eval_mode(model):
                for x, y in batches:
                    self._collected = []
                    model(x)
                    (features,) = self._collected
                    score_y, _ = self.channel_scores(features, y)
                    total = score_y if total is None else total + score_y
                    count += 1
        finally:
            self._collected = None
        if total is None:
            raise ValueError("batches: expected at least one batch to fit the mask on, got none")
        scores = total / count
        self.mask.copy_(self.select(scores).to(self.mask.dtype))
        return scores

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = int(self.step)  # the restored batch counter, read once here, outside the training step

    @property
    def dropped(self) -> list[int]:
        """Indices of the channels the saved mask zeroes."""
        return torch.nonzero(self.mask == 0).flatten().tolist()

    def extra_repr(self) -> str:
        return (f"num_channels={self.num_channels}, rule={self.rule!r}, drop_fraction={self.drop_fraction}, "
                f"refresh_every={self.refresh_every}, at_eval={self.at_eval}, enabled={self.enabled}")
