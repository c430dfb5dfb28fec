"""Building a run from its config: the model with its IB layers, the regularizer, the method, the schedule."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from ibrar.build import build_model, build_optimizer, build_regularizer, build_training_method, ib_layer_names
from ibrar.config import ConfigError, build_config


def test_robust_and_all_name_the_models_declared_layers(image_folder):
    config = build_config(tiny_config(image_folder, ib={"enabled": True, "layers": "all"}))
    bundle = build_model(config, num_classes=4, input_size=32)
    assert ib_layer_names(config, bundle) == bundle.ib_layers and len(bundle.ib_layers) >= 1
    robust = config.model_copy(update={"ib": config.ib.model_copy(update={"layers": "robust"})})
    assert ib_layer_names(robust, bundle) == bundle.robust_layers


def test_an_ib_layer_the_model_lacks_is_a_config_error_naming_the_key(image_folder):
    config = build_config(tiny_config(image_folder, ib={"enabled": True, "layers": ["no_such_layer"]}))
    bundle = build_model(config, num_classes=4, input_size=32)
    with pytest.raises(ConfigError, match="ib.layers"):
        build_regularizer(config, bundle, num_classes=4)


def test_the_step_schedule_drops_the_rate_by_gamma_every_step_size_epochs(image_folder):
    config = build_config(tiny_config(image_folder, optim={"lr": 0.1, "schedule": "step", "step_size": 2,
                                                            "gamma": 0.5}))
    optimizer, scheduler = build_optimizer(config, torch.nn.Linear(2, 2))
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize("name", ["pgd_at", "trades", "mart"])
def test_an_adversarial_method_takes_its_inner_attack_and_beta_from_the_config(name, image_folder):
    config = build_config(tiny_config(image_folder, method={"name": name, "eps": 4 / 255, "alpha": 1 / 255,
                                                            "steps": 3, "beta": 2.5}))
    method = build_training_method(config)
    assert (method.eps, method.alpha, method.steps) == (4 / 255, 1 / 255, 3)
    if name != "pgd_at":
        assert method.beta == 2.5


def test_vib_takes_its_own_beta(image_folder):
    config = build_config(tiny_config(image_folder, method={"name": "vib", "vib_beta": 0.01}))
    assert build_training_method(config).beta == 0.01
