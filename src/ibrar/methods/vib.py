"""The Variational Information Bottleneck (Alemi et al. 2017), the paper's other information baseline.

`VIBClassifier` wraps any backbone: it reads the output of one backbone layer, encodes it as a Gaussian
N(mu, diag(std^2)), samples z in training (uses mu in eval, so evaluation is deterministic) and classifies z
with a linear layer. The backbone's own head still runs but is unused. The backbone is the wrapper's
`backbone` submodule, so its layers are tapped as `backbone.<name>`; the wrapper copies the backbone's layer
metadata (`ib_layers`, `robust_layers`, `last_conv`, `penultimate`) with that prefix.
`VIB` is the training method: CE + beta * KL(N(mu, std) || N(0, I)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibrar.methods.base import Forward, Method, MethodOutput, check_nonnegative, eval_mode
from ibrar.taps import find_modules, tap_layers, unwrap

STD_SHIFT = 5.0  # std = softplus(raw - 5): Alemi et al.'s start with a small, well-behaved variance
LAYER_METADATA: tuple[str, ...] = ("ib_layers", "robust_layers", "last_conv", "penultimate")


def infer_feature_dim(
    backbone: nn.Module, feature_layer: str, input_shape: Sequence[int] = (3, 32, 32)
) -> int:
    """Flattened size of `feature_layer`'s output, found by one dummy forward (eval mode, no graph)."""
    if len(input_shape) == 0 or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise ValueError(f"input_shape: expected positive ints, e.g. (3, 32, 32), got {input_shape!r}")
    reference = next(iter(backbone.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    dummy = torch.zeros((2, *input_shape), device=device, dtype=dtype)
    with eval_mode(backbone), torch.no_grad(), tap_layers(backbone, [feature_layer]) as features:
        backbone(dummy)
    return features[feature_layer][0].numel()


def gaussian_kl_to_standard(mu: Tensor, std: Tensor) -> Tensor:
    """KL(N(mu, diag(std^2)) || N(0, I)) per example: 0.5 * sum(mu^2 + std^2 - 1 - 2 log std)."""
    return 0.5 * (mu.pow(2) + std.pow(2) - 1 - 2 * std.log()).sum(dim=1)


class VIBClassifier(nn.Module):
    """Backbone features -> Gaussian encoder -> sampled z -> linear classifier.

    After each forward, `self.kl` holds that forward's KL(N(mu, std) || N(0, I)) averaged over the batch (with
    its graph). With `samples` > 1 the returned logits are log of the mean class probability over the samples.
    `feature_dim` is inferred by a dummy forward of shape `input_shape` when not given.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_layer: str,
        feature_dim: int | None = None,
        num_classes: int = 10,
        bottleneck_dim: int = 256,
        samples: int = 1,
        input_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        find_modules(backbone, [feature_layer])
        sizes = {"num_classes": num_classes, "bottleneck_dim": bottleneck_dim, "samples": samples}
        for arg, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected an int >= 1, got {value!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2, got {num_classes}")
        if feature_dim is None:
            feature_dim = infer_feature_dim(backbone, feature_layer, input_shape)
        elif isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim: expected an int >= 1 or None to infer it, got {feature_dim!r}")
        self.backbone = backbone
        self.feature_layer = feature_layer
        self.feature_dim = feature_dim
        self.bottleneck_dim = bottleneck_dim
        self.samples = samples
        self.encoder = nn.Linear(feature_dim, 2 * bottleneck_dim)
        self.classifier = nn.Linear(bottleneck_dim, num_classes)
        self.kl: Tensor | None = None
        self._copy_layer_metadata(unwrap(backbone))

    def _copy_layer_metadata(self, backbone: nn.Module) -> None:
        for attr in LAYER_METADATA:
            value = getattr(backbone, attr, None)
            if isinstance(value, str):
                setattr(self, attr, f"backbone.{value}")
            elif isinstance(value, (tuple, list)):
                setattr(self, attr, tuple(f"backbone.{name}" for name in value))
        if hasattr(backbone, "last_conv_channels"):
            self.last_conv_channels = backbone.last_conv_channels

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu and std of q(z | x), each (m, bottleneck_dim)."""
        with tap_layers(self.backbone, [self.feature_layer]) as features:
            self.backbone(x)
        raw = self.encoder(features[self.feature_layer].flatten(1))
        mu, pre_std = raw.split(self.bottleneck_dim, dim=1)
        return mu, F.softplus(pre_std - STD_SHIFT)

    def forward(self, x: Tensor) -> Tensor:
        mu, std = self.encode(x)
        self.kl = gaussian_kl_to_standard(mu, std).mean()
        if not self.training:
            return self.classifier(mu)
        z = mu + std * torch.randn((self.samples, *mu.shape), device=mu.device, dtype=mu.dtype)
        logits = self.classifier(z)
        if self.samples == 1:
            return logits[0]
        return torch.logsumexp(F.log_softmax(logits, dim=2), dim=0) - math.log(self.samples)


class VIB(Method):
    """Loss = CE(f(x), y) + beta * KL; the trainer must `attach` the `VIBClassifier` it trains."""

    name: ClassVar[str] = "vib"
    adversarial: ClassVar[bool] = False
    train_pass: ClassVar[str] = "clean"

    def __init__(self, beta: float = 1e-3) -> None:
        self.beta = check_nonnegative("beta", beta)
        self.model: VIBClassifier | None = None

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def attach(self, model: nn.Module) -> None:
        inner = unwrap(model)
        if not isinstance(inner, VIBClassifier):
            raise ValueError(f"model: the vib method trains a VIBClassifier, got {type(inner).__name__}")
        self.model = inner

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None = None) -> MethodOutput:
        if self.model is None:
            raise RuntimeError("VIB.loss: call attach(model) with the VIBClassifier first")
        logits = forward(x, "clean")
        kl = self.model.kl
        if kl is None:
            raise RuntimeError("VIB.loss: the forward did not run the attached VIBClassifier")
        ce = F.cross_entropy(logits, y)
        return MethodOutput(ce + self.beta * kl, logits, {"ce": ce.detach(), "kl": kl.detach()})
