"""Every registered model: shape, declared layer names, channel counts, and the registry's errors."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from ibrar.models import InputNormalization, create_model, list_models, register_model

ALL_MODELS = list_models()


@functools.cache
def small_forward(name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """One eval-mode forward of a small model on 2 images, with its declared layers' outputs (cached)."""
    model = create_model(name, num_classes=7, width=0.125).eval()
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        modules[layer].register_forward_hook(lambda m, i, o, layer=layer: outputs.__setitem__(layer, o))
        for layer in {model.last_conv, model.penultimate}
    ]
    with torch.no_grad():
        outputs["logits"] = model(torch.rand(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return model, outputs


def test_registry_lists_the_paper_models() -> None:
    assert {"vgg16", "resnet18", "wrn28_10", "small_cnn"} <= set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_gives_one_logit_per_class(name: str) -> None:
    _, outputs = small_forward(name)
    assert outputs["logits"].shape == (2, 7)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_declared_layer_names_exist(name: str) -> None:
    model, _ = small_forward(name)
    modules = dict(model.named_modules())
    declared = [*model.ib_layers, *model.robust_layers, model.last_conv, model.penultimate]
    assert [layer for layer in declared if layer not in modules] == []
    assert set(model.robust_layers) <= set(model.ib_layers)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_last_conv_output_has_declared_channels(name: str) -> None:
    model, outputs = small_forward(name)
    out = outputs[model.last_conv]
    assert out.dim() == 4
    assert out.shape[1] == model.last_conv_channels


@pytest.mark.parametrize("name", ALL_MODELS)
def test_penultimate_output_is_a_flat_feature_vector(name: str) -> None:
    model, outputs = small_forward(name)
    out = outputs[model.penultimate]
    assert out.dim() == 2 and out.shape[0] == 2


@pytest.mark.parametrize("name", ALL_MODELS)
def test_width_multiplier_shrinks_parameter_count(name: str) -> None:
    def count(width: float) -> int:
        return sum(p.numel() for p in create_model(name, width=width).parameters())

    assert count(0.0625) < count(0.125)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "small_cnn"])
def test_models_accept_64x64_inputs(name: str) -> None:
    model = create_model(name, num_classes=200, width=0.0625, input_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)


def test_vgg16_has_thirteen_convs_in_five_blocks() -> None:
    model = create_model("vgg16", width=0.0625)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert {name.split(".")[0] for name in convs} == {f"block{i}" for i in range(1, 6)}
    assert model.fc1[0].out_features == model.fc2[0].out_features == round(4096 * 0.0625)


def test_resnet18_has_eight_basic_blocks() -> None:
    model = create_model("resnet18", width=0.125)
    assert sum(len(getattr(model, f"layer{i}")) for i in range(1, 5)) == 8


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n.startswith("wrn")])
def test_wide_resnet_batchnorm_uses_default_momentum(name: str) -> None:
    model = create_model(name, width=0.125)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.1}


def test_wrn28_10_has_four_blocks_per_stage_and_full_width() -> None:
    model = create_model("wrn28_10", width=0.125)
    assert [len(getattr(model, f"block{i}")) for i in (1, 2, 3)] == [4, 4, 4]
    assert model.last_conv_channels == round(640 * 0.125)


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="name") as info:
        create_model("vgg17")
    for valid in ALL_MODELS:
        assert valid in str(info.value)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"num_classes": 0}, {"input_size": 0}])
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_model("small_cnn", **kwargs)


def test_vgg16_rejects_input_size_not_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="input_size"):
        create_model("vgg16", width=0.0625, input_size=48)


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_cnn")(lambda **kw: nn.Identity())


def test_normalization_runs_inside_the_model_as_buffers() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    model = create_model("small_cnn", mean=mean, std=std)
    assert isinstance(model.normalize, InputNormalization)
    assert {"normalize.mean", "normalize.std"} <= set(dict(model.named_buffers()))
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)


def test_models_default_to_no_normalization() -> None:
    model = create_model("small_cnn")
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model.normalize(x), x)


def test_small_cnn_backpropagates() -> None:
    model = create_model("small_cnn")
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    model(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
