"""One training step of Algorithm 1: the base loss plus the IB terms of the pass it trains on, then one update."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibrar.mask import ChannelMask
from ibrar.methods import build_method
from ibrar.regularizer import IBRegularizer
from ibrar.step import TrainStep, gradient_norm
from ibrar.taps import tap_layers


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 2, 2, generator=g), torch.randint(0, 3, (16,), generator=g)


def test_the_step_loss_is_cross_entropy_plus_the_ib_terms_and_the_update_is_sgds():
    model, x, y = tiny_net(), *batch()
    reference = copy.deepcopy(model)
    regularizer = IBRegularizer(["2"], num_classes=3, alpha=0.1, beta=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tap_layers(model, ["2"]) as taps:
        out = TrainStep(model, model, build_method("ce"), optimizer, taps, regularizer)(x, y)

    with tap_layers(reference, ["2"]) as feats:  # the same loss written out by hand
        logits = reference(x)
        expected = F.cross_entropy(logits, y) + regularizer(x, y, feats).loss
    assert torch.allclose(out.loss, expected, rtol=1e-6, atol=1e-7)
    expected.backward()
    with torch.no_grad():
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.allclose(p, q - 0.1 * q.grad, rtol=1e-6, atol=1e-7)
    assert torch.isclose(out.grad_norm, torch.cat([q.grad.flatten() for q in reference.parameters()]).norm())


def test_the_gradient_norm_is_clip_grad_norms_bit_for_bit_and_leaves_the_gradients_alone(monkeypatch):
    model, x, y = tiny_net(), *batch()
    F.cross_entropy(model(x), y).backward()
    model[1].bias.grad = None  # a parameter without a gradient is skipped, as clip_grad_norm_ skips it
    grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    norm = gradient_norm(model.parameters())  # a generator, as the step passes it
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    expected = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))  # rescales by 1: no change
    assert torch.equal(norm, expected) and norm > 0
    monkeypatch.delattr(torch.nn.utils, "get_total_norm")  # torch older than 2.6: clip_grad_norm_ itself
    assert torch.equal(gradient_norm(model.parameters()), expected)


def test_with_the_ib_terms_off_the_step_is_the_base_loss_alone():
    model, x, y = tiny_net(), *batch()
    regularizer = IBRegularizer(["2"], num_classes=3, alpha=0.1, beta=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
    with tap_layers(model, ["2"]) as taps:
        out = TrainStep(model, model, build_method("ce"), optimizer, taps, regularizer)(x, y, ib_on=False)
    assert out.ib == {} and torch.allclose(out.loss, base)


def test_the_ib_terms_enter_once_per_pass_named_by_ib_passes():
    model, x, y = tiny_net(), *batch()
    regularizer = IBRegularizer(["2"], num_classes=3, alpha=0.1, beta=1.0)
    method = build_method("trades", steps=1)  # two passes: clean and adversarial
    terms = {}
    for passes in ("train", "both"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        with tap_layers(model, ["2"]) as taps:
            out = TrainStep(model, model, method, optimizer, taps, regularizer, ib_passes=passes)(
                x, y, generator=torch.Generator().manual_seed(0))
        assert len(out.features) == 2
        terms[passes] = out.ib
    assert list(terms["train"]) == [method.train_pass]
    assert sorted(terms["both"]) == sorted(out.features)


def bn_net() -> nn.Sequential:
    """A conv layer, BatchNorm, a classifier: the post-step forward's only effect is on BatchNorm's buffers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def bn_step(method_name: str, post_step_forward: bool):
    """One step of `bn_net` on `batch()`; returns the model, the step's output and the inner attack's output."""
    model, x, y = bn_net(), *batch()
    method = build_method(method_name, **({"steps": 2} if method_name == "pgd_at" else {}))
    perturbed: list[torch.Tensor | None] = []
    perturb = method.perturb
    method.perturb = lambda *args, **kwargs: perturbed.append(perturb(*args, **kwargs)) or perturbed[-1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tap_layers(model, ["1"]) as taps:
        out = TrainStep(model, model, method, optimizer, taps, post_step_forward=post_step_forward)(
            x, y, generator=torch.Generator().manual_seed(3))
    return model, out, perturbed[0]


@pytest.mark.parametrize("method_name", ["ce", "pgd_at"])
def test_the_post_step_forward_moves_batchnorm_statistics_as_a_forward_of_the_trained_batch_after_the_update(
        method_name):
    x, _ = batch()
    runs = {post: bn_step(method_name, post) for post in (True, False)}
    (with_post, out_post, x_adv), (without, out_plain, _) = runs[True], runs[False]
    assert torch.equal(out_post.loss, out_plain.loss)
    for (name, a), b in zip(with_post.named_parameters(), without.parameters(), strict=True):
        assert torch.equal(a, b), name  # the update is the same: the extra forward has no gradient
    bn_post, bn_plain = with_post[1], without[1]
    assert not torch.equal(bn_post.running_mean, bn_plain.running_mean)
    assert int(bn_post.num_batches_tracked) == int(bn_plain.num_batches_tracked) + 1
    with torch.no_grad():  # what the authors' `net(adv_x or inputs)` does after `optimizer.step()`
        without(x_adv if x_adv is not None else x)
    plain_buffers = dict(bn_plain.named_buffers())
    for name, buffer in bn_post.named_buffers():
        assert torch.equal(buffer, plain_buffers[name]), name


@pytest.mark.parametrize("rule", ["paper", "official"])
def test_the_official_mask_leaves_the_post_step_forward_unmasked_and_the_paper_mask_masks_it(rule):
    """Each training forward of a refresh batch, seen before and after the mask's hook: the authors' model masks
    only the forwards their script set targets for, the paper's mask is part of every training forward."""
    model = bn_net()
    mask = ChannelMask(4, 3, rule=rule, refresh_every=1, drop_fraction=0.25, official_count=1)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    unmasked: list[torch.Tensor] = []
    model[1].register_forward_hook(lambda module, _, output: unmasked.append(output.detach().clone())
                                   if module.training else None)
    mask.attach(model, "1")
    model[1].register_forward_hook(lambda module, _, output: seen.append((unmasked[-1], output.detach().clone()))
                                   if module.training else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tap_layers(model, ["1"]) as taps:
        TrainStep(model, model, build_method("ce"), optimizer, taps, mask=mask, post_step_forward=True)(*batch())
    (train_before, train_after), (post_before, post_after) = seen  # the training forward, then the post-step one
    assert not torch.equal(train_before, train_after)  # a refresh batch: its training forward is masked
    assert torch.equal(post_before, post_after) == (rule == "official")
