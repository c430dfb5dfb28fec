"""One training step of any method with IB-RAR, in the order of the paper's Algorithm 1.

The trainer calls `TrainStep` once per batch and does everything else (epochs, random streams, metrics,
checkpoints, signals) around it; a user's own loop can call it the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ibrar.mask import ChannelMask
from ibrar.methods import Method, MethodOutput
from ibrar.regularizer import IBRegularizer, IBTerms


def gradient_norm(parameters: Any) -> Tensor:
    """The 2-norm of all the parameters' gradients, the number `clip_grad_norm_(max_norm=inf)` returns, without
    its rescaling of every gradient by 1 (kernels on a GPU for nothing); that call where torch is older than 2.6."""
    parameters = list(parameters)
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    return torch.nn.utils.clip_grad_norm_(parameters, float("inf"))


@dataclass
class StepOutput:
    """What one step computed: the total loss, the method's output, the IB terms of each pass, the gradient
    norm, and the tapped layer outputs of each forward pass (for the information plane)."""

    loss: Tensor
    method: MethodOutput
    grad_norm: Tensor
    ib: dict[str, IBTerms] = field(default_factory=dict)
    features: dict[str, dict[str, Tensor]] = field(default_factory=dict)


@dataclass
class TrainStep:
    """Everything one step needs. `model` is the module that trains (possibly DDP-wrapped or compiled);
    `bare_model` the plain one the inner attack runs on; `taps` the live outputs of the tapped layers
    (`ibrar.tap_layers`, opened by the caller around many steps); `ib_passes` "train" or "both";
    `post_step_forward` one more forward in training mode after the update, without gradients, on the batch the
    method trains on (the authors' scripts do it for their training accuracy: it moves BatchNorm's running
    statistics a second time per batch, from the updated weights; `train.post_step_forward`)."""

    model: nn.Module
    bare_model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    taps: Mapping[str, Tensor]
    regularizer: IBRegularizer | None = None
    mask: ChannelMask | None = None
    ib_passes: str = "train"
    autocast: Any = field(default_factory=contextlib.nullcontext)
    post_step_forward: bool = False

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
                 ib_on: bool = True) -> StepOutput:
        method, features = self.method, {}

        def forward(inputs: Tensor, pass_name: str) -> Tensor:  # F_theta(X) and T = {T_l}, per pass
            expected = set(self.taps)
            if isinstance(self.taps, dict):
                self.taps.clear()  # so that a forward whose hooks did not run cannot pass off stale outputs
            logits = self.model(inputs)
            if missing := expected - set(self.taps):
                raise RuntimeError(
                    f"the forward of the model that trains did not fill the taps of {sorted(missing)}: its hooks did "
                    "not run. A torch.compile'd model may reuse a graph traced for another model of its class "
                    "without them: compile with ibrar.train.compile_for_taps (train.compile=true does)")
            features[pass_name] = dict(self.taps)
            return logits

        if self.mask is not None:
            self.mask.observe(x, y)  # T_last = T_last * mask: the mask rescored on this batch when due
        # The inner attack runs on the bare module in float32: its gradient needs the precision.
        x_adv = method.perturb(self.bare_model, x, y, generator=generator)
        with self.autocast:
            out = method.loss(forward, x, y, x_adv)  # the base loss (CE, PGD-AT, TRADES, MART, VIB)
        loss, ib_terms = out.loss, {}
        if ib_on and self.regularizer is not None:  # + alpha * sum_l HSIC(X, T_l) - beta * sum_l HSIC(Y, T_l)
            x_ib = self.regularizer.select_x(x, x_adv)
            for name in self.ib_pass_names(features):
                ib_terms[name] = self.regularizer(x_ib, y, features[name])
                loss = loss + ib_terms[name].loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = gradient_norm(self.bare_model.parameters())  # on the device, for the spike report
        self.optimizer.step()  # theta <- theta - a * grad L
        if self.post_step_forward:
            if self.mask is not None:
                self.mask.end_batch()  # not one of the batch's training forwards: the official mask skips it
            with torch.no_grad(), self.autocast:
                self.bare_model(x_adv if x_adv is not None else x)
        return StepOutput(loss, out, grad_norm, ib_terms, features)

    def ib_pass_names(self, features: Mapping[str, Any]) -> Sequence[str]:
        """The passes whose T_l enter the IB terms: the one the method trains on, or every pass."""
        return list(features) if self.ib_passes == "both" else [self.method.train_pass]
