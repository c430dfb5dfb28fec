"""The wiring that decides what the method means: which batch plays X, which forward pass gives T, when the
mask is rescored, which mask evaluation uses, and that the adaptive attack really attacks the IB penalty."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import Tensor, nn

from attack_fixtures import NUM_CLASSES, test_data, trained_model
from conftest import tiny_config
from ibrar.attacks import PGD, AdaptivePGD
from ibrar.checkpoint import load_file
from ibrar.config import build_config
from ibrar.loading import load_trained
from ibrar.mask import ChannelMask
from ibrar.methods import build_method
from ibrar.regularizer import IBRegularizer, IBTerms
from ibrar.step import TrainStep
from ibrar.taps import tap_layers
from ibrar.train import compile_for_taps, train

CLASSES = 4


def small_model() -> nn.Module:
    """No BatchNorm or dropout: the same input gives the same layer outputs in any mode."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 8, 3, padding=1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(),
        fc=nn.Linear(32, 16), relu2=nn.ReLU(), out=nn.Linear(16, CLASSES)))


def batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 3, 8, 8, generator=g), torch.randint(CLASSES, (8,), generator=g)


class Recording(IBRegularizer):
    """An IBRegularizer that keeps what each call was given."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Tensor, dict[str, Tensor]]] = []

    def __call__(self, x: Tensor, y: Tensor, features: dict[str, Tensor], *args: object) -> IBTerms:
        self.calls.append((x.detach().clone(), {k: v.detach().clone() for k, v in features.items()}))
        return super().__call__(x, y, features, *args)


def one_step(method_name: str, x_source: str = "clean", passes: str = "train", **method_params: object):
    """Run one TrainStep; return the regularizer's calls, the clean batch, the inner attack's output, and the
    layer outputs of a fresh forward on each batch with the weights the step saw."""
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method(method_name, **method_params)
    method.attach(model)
    reg = Recording(["conv", "fc"], CLASSES, x_source=x_source)
    adversarial: list[Tensor] = []
    perturb = method.perturb

    def recorded_perturb(*args: object, **kwargs: object) -> Tensor:
        adversarial.append(perturb(*args, **kwargs))
        return adversarial[-1]

    method.perturb = recorded_perturb
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    with tap_layers(model, reg.layers) as taps:
        step = TrainStep(model, model, method, optimizer, taps, reg, ib_passes=passes)
        out = step(x, y, generator=torch.Generator().manual_seed(1))
    fresh = small_model()
    fresh.load_state_dict(before)
    with torch.no_grad(), tap_layers(fresh, reg.layers) as taps:
        outputs = {}
        for name, inputs in (("clean", x), ("adv", adversarial[0])):
            if inputs is None:  # no inner attack (cross-entropy)
                continue
            fresh(inputs)
            outputs[name] = {k: v.clone() for k, v in taps.items()}
    return reg.calls, x, adversarial[0], outputs, out


def same_features(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_x_is_the_clean_batch_by_default():
    calls, x, x_adv, _, _ = one_step("pgd_at", steps=2)
    assert not torch.equal(x, x_adv)
    (ib_x, _), = calls
    assert torch.equal(ib_x, x)


def test_x_is_the_adversarial_batch_when_configured():
    calls, x, x_adv, _, _ = one_step("pgd_at", x_source="adversarial", steps=2)
    (ib_x, _), = calls
    assert torch.equal(ib_x, x_adv) and not torch.equal(ib_x, x)


def test_t_comes_from_the_adversarial_pass_for_pgd_at():
    calls, _, _, outputs, out = one_step("pgd_at", steps=2)
    (_, features), = calls
    assert same_features(features, outputs["adv"]) and not same_features(features, outputs["clean"])
    assert list(out.ib) == ["adv"]


def test_t_comes_from_both_passes_with_ib_passes_both():
    calls, _, _, outputs, out = one_step("trades", passes="both", steps=2)
    assert len(calls) == 2 and sorted(out.ib) == ["adv", "clean"]
    given = [features for _, features in calls]
    assert any(same_features(f, outputs["clean"]) for f in given)
    assert any(same_features(f, outputs["adv"]) for f in given)


def test_t_comes_from_the_clean_pass_without_adversarial_training():
    calls, x, x_adv, outputs, out = one_step("ce")
    (ib_x, features), = calls
    assert x_adv is None and torch.equal(ib_x, x)
    assert same_features(features, outputs["clean"]) and list(out.ib) == ["clean"]


def test_the_total_loss_is_the_base_loss_plus_the_ib_penalty():
    _, _, _, _, out = one_step("pgd_at", steps=1)
    assert torch.allclose(out.loss, out.method.loss + out.ib["adv"].loss)


@pytest.mark.parametrize("rule", ["paper", "official"])
def test_the_mask_is_rescored_every_n_batches_of_training(rule, monkeypatch):
    model = small_model()
    mask = ChannelMask(8, CLASSES, rule=rule, refresh_every=3, drop_fraction=0.25, official_count=1)
    mask.attach(model, "conv")
    scored: list[int] = []
    channel_scores = ChannelMask.channel_scores

    def counting(self: ChannelMask, *args: object, **kwargs: object):
        scored.append(len(seen))
        return channel_scores(self, *args, **kwargs)

    monkeypatch.setattr(ChannelMask, "channel_scores", counting)
    method = build_method("ce")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[int] = []
    with tap_layers(model, ["fc"]) as taps:
        step = TrainStep(model, model, method, optimizer, taps, mask=mask)
        for i in range(7):
            seen.append(i)
            step(*batch(i))
    assert [i - 1 for i in scored] == [0, 3, 6]
    if rule == "paper":
        assert int((mask.mask == 0).sum()) == 2  # 25% of 8 channels, kept for evaluation
    else:
        assert torch.equal(mask.mask, torch.ones(8))  # the authors' mask lives for one forward pass only


def test_the_fitted_mask_is_the_one_evaluation_uses(image_folder, tmp_path, monkeypatch):
    fitted: list[Tensor] = []
    fit = ChannelMask.fit

    def recording_fit(self: ChannelMask, *args: object, **kwargs: object) -> Tensor:
        scores = fit(self, *args, **kwargs)
        fitted.append(self.mask.clone())
        return scores

    monkeypatch.setattr(ChannelMask, "fit", recording_fit)
    config = build_config(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 0},
                                      mask={"enabled": True, "refresh_every": 2, "drop_fraction": 0.25}))
    train(config, tmp_path / "run", quiet=True)
    (after_fit,) = fitted
    assert torch.equal(load_file(tmp_path / "run" / "final.pt")["mask"]["mask"], after_fit)
    bundle, _, _ = load_trained(tmp_path / "run")
    assert torch.equal(bundle.mask.mask, after_fit) and int((after_fit == 0).sum()) > 0
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        masked = bundle.model(x)
        bundle.mask.enabled = False
        unmasked = bundle.model(x)
        # the same model with the fitted channels zeroed by hand gives exactly what evaluation sees
        layer = dict(bundle.model.named_modules())[bundle.last_conv]
        handle = layer.register_forward_hook(lambda _m, _i, out: out * after_fit.view(1, -1, 1, 1))
        by_hand = bundle.model(x)
        handle.remove()
    assert torch.equal(masked, by_hand) and not torch.equal(masked, unmasked)


def test_the_adaptive_attack_climbs_the_ib_penalty_that_plain_pgd_ignores():
    """Fails if the penalty is dropped from AdaptivePGD's objective: it would then be PGD on CE."""
    model = trained_model()
    x, y = test_data(64)
    # A penalty that dominates CE: the adaptive attack must follow it, PGD cannot see it.
    reg = IBRegularizer(["conv", "fc1"], NUM_CLASSES, alpha=50.0, beta=0.0)
    adaptive = AdaptivePGD(model, reg, eps=8 / 255, alpha=2 / 255, steps=5, seed=0)(x, y)
    plain = PGD(model, eps=8 / 255, alpha=2 / 255, steps=5, seed=0)(x, y)

    def penalty(x_adv: Tensor) -> float:
        with torch.no_grad(), tap_layers(model, reg.layers) as feats:
            model(x_adv)
            return float(reg(x, y, feats).loss)

    assert not torch.equal(adaptive, plain)
    assert penalty(adaptive) > penalty(plain) + 1e-3


def _compiled_forward_runs_a_new_hook(x: Tensor) -> bool:
    """Whether a compiled model with a forward hook runs it although Dynamo holds a graph traced without one."""
    probe, calls = small_model(), []
    probe.conv.register_forward_hook(lambda *args: calls.append(1))
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=True):
        torch.compile(probe, backend="eager")(x)
    return bool(calls)


def test_a_compiled_forward_that_skips_the_tap_hooks_is_refused_and_compile_for_taps_runs_them():
    # Dynamo's default does not guard on module hooks: a graph traced for another model of the class, without
    # taps, is then reused and fills none, and the IB terms would see the inner attack's stale layer outputs.
    x, y = batch()
    torch._dynamo.reset()
    torch.compile(small_model(), backend="eager")(x)  # a graph for nn.Sequential, traced without hooks
    if _compiled_forward_runs_a_new_hook(x):
        torch._dynamo.reset()
        pytest.skip(f"torch {torch.__version__}'s Dynamo runs the hooks of a model the cached graph was not traced "
                    "with (2.4 does, 2.11 and 2.14 do not): no forward skips the taps here")
    model = small_model()
    method = build_method("pgd_at", steps=1)
    method.attach(model)
    reg = IBRegularizer(["conv", "fc"], CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=True), tap_layers(model, reg.layers) as taps:
            step = TrainStep(torch.compile(model, backend="eager"), model, method, optimizer, taps, reg)
            with pytest.raises(RuntimeError, match=r"did not fill the taps of \['conv', 'fc'\]"):
                step(x, y, generator=torch.Generator().manual_seed(1))
            step.model = compile_for_taps(model, backend="eager")
            out = step(x, y, generator=torch.Generator().manual_seed(1))  # raises as above if no hook ran
        assert set(out.features["adv"]) == {"conv", "fc"}
        assert all(t.grad_fn is not None for t in out.features["adv"].values())  # from the compiled forward
        assert out.ib["adv"].loss.isfinite()
    finally:
        torch._dynamo.reset()


def test_the_post_step_forward_changes_batchnorm_statistics_and_nothing_the_training_computes(image_folder, tmp_path):
    """Through the trainer: train-mode forwards use the batch's own statistics, so the weights after two epochs
    are bit-identical with and without the authors' post-step forward, and only the running statistics (what
    evaluation uses) differ."""
    trained = {}
    for post in (False, True):
        config = build_config(tiny_config(image_folder, train={"eval_pgd_steps": 0, "post_step_forward": post}))
        train(config, tmp_path / str(post), quiet=True)
        trained[post] = load_file(tmp_path / str(post) / "final.pt")["model"]
    statistics = [key for key in trained[False] if "running_" in key]
    assert statistics
    for key, value in trained[False].items():
        if key in statistics:
            assert not torch.equal(value, trained[True][key]), key
        elif "num_batches_tracked" in key:
            assert int(trained[True][key]) == 2 * int(value), key
        else:
            assert torch.equal(value, trained[True][key]), key
