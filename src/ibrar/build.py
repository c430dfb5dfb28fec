"""From a RunConfig to the objects a run is made of: device, model (with its IB layer names and mask), the
IB regularizer, the training method, the optimizer and schedule, and the data.

The trainer, the evaluation and the benchmarks all build through these functions, so a run is described by its
config alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ibrar.config import ConfigError, RunConfig
from ibrar.data import ImageData, check_same_classes, load_split, resolve_data_root
from ibrar.distributed import all_reduce_mean
from ibrar.mask import ChannelMask
from ibrar.methods import Method, build_method
from ibrar.models import create_model
from ibrar.modes import eval_mode
from ibrar.regularizer import IBRegularizer
from ibrar.taps import find_modules, tap_layers
from ibrar.user_callable import ModelSpecError, build_module


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


@dataclass
class ModelBundle:
    """A model with the names the IB machinery needs and its (optional) channel mask."""

    model: nn.Module
    ib_layers: tuple[str, ...]
    robust_layers: tuple[str, ...]
    last_conv: str | None
    mask: ChannelMask | None = None


def build_model(config: RunConfig, num_classes: int, input_size: int) -> ModelBundle:
    """The configured model (a registered name, or `package.module:builder` for a user's own), mask attached."""
    mc = config.model
    if ":" in mc.name:  # a user's builder, found and checked as `ibrar eval --model` finds one
        try:
            model = build_module(mc.name, {"num_classes": num_classes}, option="model.name",
                                 arguments="the num_classes= that ibrar train passes")
        except ModelSpecError as err:
            raise ConfigError(str(err)) from None
    else:
        try:
            model = create_model(mc.name, num_classes=num_classes, width=mc.width, input_size=input_size)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None
    ib_layers = tuple(mc.ib_layers or getattr(model, "ib_layers", ()))
    robust_layers = tuple(mc.robust_layers or getattr(model, "robust_layers", ()) or ib_layers)
    last_conv = mc.last_conv or getattr(model, "last_conv", None)
    if not ib_layers:
        raise ConfigError(f"model.ib_layers: {mc.name} declares no IB layers; name them in the config")
    if config.method.name == "vib":
        from ibrar.methods.vib import VIBClassifier

        model = VIBClassifier(model, feature_layer=getattr(model, "penultimate", ib_layers[-1]),
                              num_classes=num_classes, bottleneck_dim=config.method.vib_dim,
                              input_shape=(3, input_size, input_size))
        ib_layers = tuple(f"backbone.{n}" for n in ib_layers)
        robust_layers = tuple(f"backbone.{n}" for n in robust_layers)
        last_conv = f"backbone.{last_conv}" if last_conv else None
    for what, names in (("ib_layers", ib_layers), ("robust_layers", robust_layers)):
        try:
            find_modules(model, names)
        except ValueError as err:
            raise ConfigError(f"model.{what}: {err}") from None
    bundle = ModelBundle(model, ib_layers, robust_layers, last_conv)
    if config.mask.enabled:
        if last_conv is None:
            raise ConfigError("mask.enabled: the model names no last convolutional layer; set model.last_conv")
        try:
            find_modules(model, [last_conv])
        except ValueError as err:
            raise ConfigError(f"model.last_conv: {err}") from None
        channels = _output_channels(model, last_conv, input_size)
        mk = config.mask
        try:
            bundle.mask = ChannelMask(channels, num_classes, rule=mk.rule, drop_fraction=mk.drop_fraction,
                                      official_count=mk.official_count, refresh_every=mk.refresh_every,
                                      at_eval=mk.at_eval, estimator=config.ib.estimator,
                                      label_kernel=config.ib.label_kernel, sigma=config.ib.sigma,
                                      reduce=all_reduce_mean)
        except ValueError as err:
            raise ConfigError(f"mask.{err}") from None
        bundle.mask.attach(model, last_conv)
    return bundle


def _output_channels(model: nn.Module, layer: str, input_size: int) -> int:
    with torch.no_grad(), tap_layers(model, [layer]) as feats, eval_mode(model):
        model(torch.zeros(1, 3, input_size, input_size))
    out = feats[layer]
    if out.dim() < 3:
        raise ConfigError(f"mask: layer {layer!r} outputs shape {tuple(out.shape)}, not (N, C, H, W) feature maps")
    return out.shape[1]


def ib_layer_names(config: RunConfig, bundle: ModelBundle) -> tuple[str, ...]:
    layers = config.ib.layers
    if layers == "robust":
        return bundle.robust_layers
    if layers == "all":
        return bundle.ib_layers
    return tuple(layers)


def build_regularizer(config: RunConfig, bundle: ModelBundle, num_classes: int,
                      layers: tuple[str, ...] | None = None) -> IBRegularizer:
    ib = config.ib
    names = layers or ib_layer_names(config, bundle)
    try:
        find_modules(bundle.model, names)
    except ValueError as err:
        raise ConfigError(f"ib.layers: {err}") from None
    return IBRegularizer(names, num_classes, alpha=ib.alpha, beta=ib.beta, estimator=ib.estimator,
                         label_kernel=ib.label_kernel, sigma=ib.sigma, bandwidth=ib.bandwidth,
                         x_source=ib.x_source)


def build_training_method(config: RunConfig) -> Method:
    m = config.method
    params: dict[str, Any] = {}
    if m.name in ("pgd_at", "trades", "mart"):
        params = {"eps": m.eps, "alpha": m.alpha, "steps": m.steps}
    if m.name in ("trades", "mart"):
        params["beta"] = m.beta
    if m.name == "trades":
        params["variant"] = m.variant
    if m.name == "vib":
        params = {"beta": m.vib_beta}
    return build_method(m.name, **params)


def build_optimizer(config: RunConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    o = config.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                                weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)
    if o.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    elif o.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)
    return optimizer, scheduler


def load_data(config: RunConfig, data_root: str | Path | None) -> tuple[ImageData, ImageData]:
    root = resolve_data_root(config.data.root or data_root)
    train = load_split(config.data.name, root, "train", download=config.data.download)
    test = load_split(config.data.name, root, "test", download=config.data.download)
    check_same_classes(train.classes, test.classes, f"the training split in {root} has")
    subset = config.data.train_subset
    if subset is not None and subset > len(train):
        raise ConfigError(f"data.train_subset={subset}: the training set in {root} has only {len(train)} images; "
                          f"give at most {len(train)}, or leave it unset to train on all of them")
    return train, test


def check_model_config(config: RunConfig) -> None:
    """Model name, IB layers, mask layer: ConfigError now, before the data is read (shapes only, no memory)."""
    with torch.device("meta"):
        bundle = build_model(config, num_classes=10, input_size=64 if config.data.name == "tinyimagenet" else 32)
        if config.ib.enabled:
            build_regularizer(config, bundle, 10)
