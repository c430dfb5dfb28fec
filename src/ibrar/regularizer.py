"""The IB-RAR penalty: alpha * sum_l HSIC(X, T_l) - beta * sum_l HSIC(Y, T_l) (paper Eq. 1-2).

HBaR (Wang et al. 2021) is the same penalty on all hidden layers with its own weights: `IBRegularizer.hbar`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ibrar.hsic import (
    ESTIMATORS,
    KERNELS,
    Bandwidth,
    Estimator,
    KernelKind,
    KernelMatrix,
    combine,
    kernel_matrix,
    one_hot_labels,
    prepare,
)

XSource = Literal["clean", "adversarial"]

DEFAULT_ALPHA = 0.008  # the authors' code, for every model (METHOD.md section 1)
DEFAULT_BETA = 0.08
HBAR_ALPHA = 0.006  # HBaR's lambda_x / lambda_y for CIFAR-10
HBAR_BETA = 0.05


@dataclass
class IBTerms:
    """The penalty (with its graph) and each layer's HSIC values (detached, for logging and the information plane)."""

    loss: Tensor
    hsic_x: dict[str, Tensor] = field(default_factory=dict)
    hsic_y: dict[str, Tensor] = field(default_factory=dict)


class IBRegularizer:
    """Computes the IB-RAR penalty from inputs, labels and tapped layer outputs."""

    def __init__(
        self,
        layers: Sequence[str],
        num_classes: int,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        estimator: Estimator = "nocco",
        label_kernel: KernelKind = "linear",
        sigma: float = 5.0,
        bandwidth: Bandwidth = "scaled",
        x_source: XSource = "clean",
    ) -> None:
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers: expected a non-empty list of layer names, got {layers!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2, got {num_classes}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta: expected non-negative weights, got alpha={alpha}, beta={beta}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
        if label_kernel not in KERNELS:
            raise ValueError(f"label_kernel: expected one of {KERNELS}, got {label_kernel!r}")
        if x_source not in ("clean", "adversarial"):
            raise ValueError(f"x_source: expected 'clean' or 'adversarial', got {x_source!r}")
        self.layers = tuple(layers)
        self.num_classes = num_classes
        self.alpha = alpha
        self.beta = beta
        self.estimator = estimator
        self.label_kernel = label_kernel
        self.sigma = sigma
        self.bandwidth = bandwidth
        self.x_source = x_source

    @classmethod
    def hbar(cls, layers: Sequence[str], num_classes: int, **overrides: object) -> IBRegularizer:
        """HBaR: the HSIC bottleneck on all hidden layers, with HBaR's published CIFAR-10 weights."""
        params = {"alpha": HBAR_ALPHA, "beta": HBAR_BETA, "label_kernel": "gaussian", **overrides}
        return cls(layers, num_classes, **params)

    def select_x(self, clean: Tensor, adversarial: Tensor | None) -> Tensor:
        """The batch that plays X: the clean inputs by default, the adversarial ones when configured."""
        if self.x_source == "adversarial" and adversarial is not None:
            return adversarial
        return clean

    def input_kernel(self, x: Tensor) -> KernelMatrix:
        return kernel_matrix(x.detach(), "gaussian", self.sigma, self.bandwidth)

    def label_kernel_matrix(self, y: Tensor, dtype: torch.dtype) -> KernelMatrix:
        return kernel_matrix(one_hot_labels(y, self.num_classes).to(dtype), self.label_kernel, self.sigma)

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        features: Mapping[str, Tensor],
        kx: KernelMatrix | None = None,
        ky: KernelMatrix | None = None,
    ) -> IBTerms:
        """The penalty for one batch. `kx`/`ky` may be passed in when the caller already has them."""
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(f"features: no output captured for layers {missing}; tap them with tap_layers")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x and y: expected the same batch size, got {x.shape[0]} and {y.shape[0]}")
        # HSIC is computed in float32 at least, outside autocast: in bf16 the kernels lose too much precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._terms(x, y, features, kx, ky)

    def _terms(self, x: Tensor, y: Tensor, features: Mapping[str, Tensor], kx: KernelMatrix | None,
               ky: KernelMatrix | None) -> IBTerms:
        dtype = torch.promote_types(features[self.layers[0]].dtype, torch.float32)
        kx = kx if kx is not None else self.input_kernel(x.to(dtype))
        ky = ky if ky is not None else self.label_kernel_matrix(y, dtype)
        if kx.size != ky.size:
            raise ValueError(f"x and y: expected the same batch size, got {kx.size} and {ky.size}")
        # Every kernel of the step (X's, Y's and each layer's) is prepared in one batched call and the estimates
        # are combined at once: one float64 solve for all of them instead of one per kernel (on a GPU, a few
        # launches instead of a few per layer). Per slice this is bit for bit the kernel-by-kernel computation
        # (tests/test_taps_regularizer.py), and the loss adds the layers' terms in the same order as before.
        kernels = [kx.matrix.to(dtype), ky.matrix.to(dtype)]
        for name in self.layers:
            t = features[name]
            if t.shape[0] != x.shape[0]:
                raise ValueError(f"features[{name!r}]: batch size {t.shape[0]} differs from x's {x.shape[0]}")
            kernels.append(kernel_matrix(t.to(dtype), "gaussian", self.sigma, self.bandwidth).matrix)
        prepared = prepare(torch.stack(kernels), self.estimator)
        # (2, layers): HSIC(X, T_l) and HSIC(Y, T_l); both always, since the information plane needs them even
        # when a weight is 0
        h = combine(prepared[:2, None], prepared[None, 2:], self.estimator).to(dtype)
        # ((0 + a_1 - b_1) + a_2 - b_2) + ...: the weights applied to all layers at once, the sum in the layers'
        # order (bit for bit the layer-by-layer sum; 0 + a_1 is a_1), about half the ops of one term per layer
        weighted_x, weighted_y = (self.alpha * h[0]).unbind(), (self.beta * h[1]).unbind()
        loss = weighted_x[0] - weighted_y[0]
        for a, b in zip(weighted_x[1:], weighted_y[1:], strict=True):
            loss = loss + a - b
        detached = h.detach()
        return IBTerms(loss, dict(zip(self.layers, detached[0].unbind(), strict=True)),
                       dict(zip(self.layers, detached[1].unbind(), strict=True)))
