"""Every part of ibrar that runs a model in eval mode gives each submodule its own mode back: a caller's frozen
BatchNorm inside a training model stays frozen, the rest stays in training, also after an error."""

import pytest
import torch
from torch import nn

from ibrar.attacks import PGD
from ibrar.eval_estimate import plan_evaluation, probe
from ibrar.evaluate import evaluate
from ibrar.mask import ChannelMask
from ibrar.modes import eval_mode
from ibrar.user_model import check_model


def mixed_mode_model() -> nn.Sequential:
    """A training model whose first BatchNorm the caller froze (eval), as fine-tuning code does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 8 * 8, 3)).train()
    model[1].eval()
    return model


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def images(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 3


def test_eval_mode_switches_every_submodule_and_restores_each_after_an_error():
    model = mixed_mode_model()
    before = modes(model)
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not any(modes(model).values())
        raise RuntimeError("boom")
    assert modes(model) == before and before["1"] is False and before["4"] is True


def fit_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    mask = ChannelMask(4, num_classes=3, drop_fraction=0.25, estimator="nhsic")
    handle = mask.attach(model, "3")
    try:
        mask.fit(model, [(x, y)])
    finally:
        handle.remove()


@pytest.mark.parametrize("use", [
    pytest.param(lambda model, x, y: PGD(model, eps=8 / 255, steps=2, seed=0)(x, y), id="attack"),
    pytest.param(fit_mask, id="mask-fit"),
    pytest.param(lambda model, x, y: check_model(model, x, num_classes=3), id="check_model"),
    pytest.param(lambda model, x, y: evaluate(model, x, y, ["fgsm"], n=len(y)), id="evaluate"),
    pytest.param(lambda model, x, y: probe(model, x, y), id="probe"),
    pytest.param(lambda model, x, y: plan_evaluation(model, x, y, len(y), {"pgd": PGD(model, steps=2)}),
                 id="plan_evaluation"),
])
def test_each_use_of_eval_mode_leaves_mixed_modes_as_found(use):
    model = mixed_mode_model()
    x, y = images()
    before = modes(model)
    use(model, x, y)
    assert modes(model) == before
