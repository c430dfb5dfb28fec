"""Training methods: loss formulas, inner attacks in eval mode, pass names, VIB, and the name registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ibrar.methods import MART, PGDAT, TRADES, VIB, CrossEntropy, VIBClassifier, build_method
from ibrar.models import small_cnn
from ibrar.taps import tap_layers

NUM_CLASSES = 4


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, NUM_CLASSES)
    )


def blobs(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes, each a fixed 3x4x4 prototype plus small noise, inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    prototypes = 0.2 + 0.6 * torch.rand(NUM_CLASSES, 3, 4, 4, generator=g)
    y = torch.arange(n) % NUM_CLASSES
    x = (prototypes[y] + 0.05 * torch.randn(n, 3, 4, 4, generator=g)).clamp(0, 1)
    return x, y


def fixed_forward(logits: dict[str, torch.Tensor], calls: list[str] | None = None):
    def forward(_inputs: torch.Tensor, pass_name: str) -> torch.Tensor:
        if calls is not None:
            calls.append(pass_name)
        return logits[pass_name]

    return forward


def recording_forward(model: nn.Module, calls: list[str]):
    def forward(inputs: torch.Tensor, pass_name: str) -> torch.Tensor:
        calls.append(pass_name)
        return model(inputs)

    return forward


# ---- hand-written references, one example at a time --------------------------------------------------

def softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def ce_ref(logits: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), y.tolist(), strict=True):
        total += -math.log(softmax_row(row)[label])
    return total / len(y)


def kl_row(p: list[float], q: list[float]) -> float:
    return sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q, strict=True))


def trades_kl_ref(clean: torch.Tensor, adv: torch.Tensor) -> float:
    rows = list(zip(clean.tolist(), adv.tolist(), strict=True))
    return sum(kl_row(softmax_row(c), softmax_row(a)) for c, a in rows) / len(rows)


def mart_ref(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    bce, kl = 0.0, 0.0
    for c, a, label in zip(clean.tolist(), adv.tolist(), y.tolist(), strict=True):
        p_adv, p_clean = softmax_row(a), softmax_row(c)
        top_wrong = max(p for k, p in enumerate(p_adv) if k != label)
        bce += -math.log(p_adv[label]) - math.log(1 - top_wrong)
        kl += kl_row(p_clean, p_adv) * (1 - p_clean[label])
    n = len(y)
    return bce / n + beta * kl / n


@pytest.fixture
def logits_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    clean = 2 * torch.randn(5, NUM_CLASSES, generator=g, dtype=torch.float64)
    adv = 2 * torch.randn(5, NUM_CLASSES, generator=g, dtype=torch.float64)
    return clean, adv, torch.tensor([0, 1, 2, 3, 1])


def test_trades_standard_loss_matches_the_formula(logits_pair):
    clean, adv, y = logits_pair
    out = TRADES(beta=6.0).loss(fixed_forward({"clean": clean, "adv": adv}), clean, y, adv)
    expected = ce_ref(clean, y) + 6.0 * trades_kl_ref(clean, adv)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    assert out.parts["kl"].item() == pytest.approx(trades_kl_ref(clean, adv), rel=1e-9)
    assert torch.equal(out.logits, adv)


@pytest.mark.parametrize("beta", [0.5, 2.0])  # 0.5: the authors' (the official profile's); the weight is beta
def test_trades_official_loss_uses_adversarial_ce_and_beta_kl(logits_pair, beta):
    clean, adv, y = logits_pair
    method = TRADES(beta=beta, variant="official")
    out = method.loss(fixed_forward({"clean": clean, "adv": adv}), clean, y, adv)
    expected = ce_ref(adv, y) + beta * trades_kl_ref(clean, adv)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)


def test_mart_loss_matches_the_formula(logits_pair):
    clean, adv, y = logits_pair
    out = MART(beta=6.0).loss(fixed_forward({"clean": clean, "adv": adv}), clean, y, adv)
    assert out.loss.item() == pytest.approx(mart_ref(clean, adv, y, 6.0), rel=1e-9)
    assert set(out.parts) == {"ce", "margin", "kl"}


def test_mart_margin_term_stays_finite_when_a_wrong_class_is_certain():
    adv = torch.tensor([[0.0, 40.0, 0.0, 0.0]])  # 1 - p_wrong underflows to 0 in float32
    y = torch.tensor([0])
    out = MART(beta=0.0).loss(fixed_forward({"clean": adv, "adv": adv}), adv, y, adv)
    assert torch.isfinite(out.loss)
    # -log(1 - p_1) = log(e^40 + 3) - log(3)
    assert out.parts["margin"].item() == pytest.approx(40.0 - math.log(3.0), rel=1e-5)


def test_cross_entropy_matches_the_formula(logits_pair):
    clean, _, y = logits_pair
    out = CrossEntropy().loss(fixed_forward({"clean": clean}), clean, y, None)
    assert out.loss.item() == pytest.approx(ce_ref(clean, y), rel=1e-9)


# ---- forward passes the methods ask for -------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (CrossEntropy(), ["clean"]),
        (PGDAT(steps=1), ["adv"]),
        (TRADES(steps=1), ["clean", "adv"]),
        (TRADES(steps=1, variant="official"), ["clean", "adv"]),
        (MART(steps=1), ["clean", "adv"]),
    ],
)
def test_methods_call_forward_with_their_pass_names(method, expected):
    model = tiny_cnn()
    x, y = blobs(8)
    calls: list[str] = []
    x_adv = method.perturb(model, x, y)
    assert (x_adv is None) == (not method.adversarial)
    method.loss(recording_forward(model, calls), x, y, x_adv)
    assert calls == expected
    assert method.train_pass in expected


def test_adversarial_methods_require_x_adv():
    x, y = blobs(4)
    with pytest.raises(ValueError, match="x_adv"):
        PGDAT().loss(recording_forward(tiny_cnn(), []), x, y, None)


# ---- the inner attack ------------------------------------------------------------------------------

ADVERSARIAL = [
    PGDAT(eps=0.1, alpha=0.05, steps=4),
    TRADES(eps=0.1, alpha=0.05, steps=4),
    TRADES(eps=0.1, alpha=0.05, steps=4, variant="official"),
    MART(eps=0.1, alpha=0.05, steps=4),
]


@pytest.mark.parametrize("method", ADVERSARIAL, ids=repr)
def test_perturb_stays_in_the_ball_and_leaves_the_model_untouched(method):
    model = tiny_cnn()
    model.train()
    model[2].eval()  # a submodule in its own mode must get it back
    x = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(1))  # values near 0 and 1 too
    y = torch.arange(16) % NUM_CLASSES
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = method.perturb(model, x, y, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    assert not x_adv.requires_grad
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].training and not model[2].training
    assert all(p.grad is None for p in model.parameters())


def test_perturb_is_reproducible_with_a_generator():
    model, (x, y) = tiny_cnn(), blobs(8)
    method = MART(eps=0.1, alpha=0.05, steps=2)
    first = method.perturb(model, x, y, torch.Generator().manual_seed(5))
    second = method.perturb(model, x, y, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


def test_trades_standard_attack_starts_next_to_the_clean_input():
    model, (x, y) = tiny_cnn(), blobs(8)
    x_adv = TRADES(eps=0.1, alpha=0.05, steps=0).perturb(model, x, y, torch.Generator().manual_seed(0))
    assert 0 < (x_adv - x).abs().max() < 0.01  # 0.001 * N(0, 1), not a uniform draw in the ball


# ---- every method learns the toy problem -----------------------------------------------------------

def train_losses(method, model: nn.Module, steps: int = 25) -> list[float]:
    x, y = blobs(64)
    method.attach(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    forward = recording_forward(model, [])
    losses = []
    for _ in range(steps):
        model.train()
        x_adv = method.perturb(model, x, y, generator)
        out = method.loss(forward, x, y, x_adv)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize(
    "name,params",
    [
        ("ce", {}),
        ("pgd_at", {"eps": 0.03, "alpha": 0.01, "steps": 3}),
        ("trades", {"eps": 0.03, "alpha": 0.01, "steps": 3}),
        ("trades", {"eps": 0.03, "alpha": 0.01, "steps": 3, "variant": "official"}),
        ("mart", {"eps": 0.03, "alpha": 0.01, "steps": 3}),
        ("vib", {"beta": 1e-3}),
    ],
)
def test_each_method_lowers_its_loss_on_a_toy_problem(name, params):
    model = tiny_cnn()
    if name == "vib":
        model = VIBClassifier(model, "2", num_classes=NUM_CLASSES, bottleneck_dim=16, input_shape=(3, 4, 4))
    losses = train_losses(build_method(name, **params), model)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0]


# ---- VIB ---------------------------------------------------------------------------------------------

def vib_model(**kwargs) -> VIBClassifier:
    return VIBClassifier(
        tiny_cnn(), "2", num_classes=NUM_CLASSES, bottleneck_dim=8, input_shape=(3, 4, 4), **kwargs
    )


def test_vib_is_deterministic_in_eval_and_stochastic_in_training():
    model, (x, _) = vib_model(), blobs(8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
    assert model.kl is not None and model.kl.item() >= 0


def test_vib_infers_the_feature_dimension_and_keeps_backbone_layer_names():
    model = vib_model()
    assert model.feature_dim == 8 * 4 * 4
    with tap_layers(model, ["backbone.1", "encoder"]) as features:
        model(blobs(4)[0])
    assert features["backbone.1"].shape == (4, 8, 4, 4)
    assert features["encoder"].shape == (4, 16)


def test_vib_copies_layer_metadata_with_the_backbone_prefix():
    backbone = small_cnn(num_classes=NUM_CLASSES, input_size=8)
    model = VIBClassifier(backbone, backbone.penultimate, num_classes=NUM_CLASSES, input_shape=(3, 8, 8))
    assert model.ib_layers == tuple(f"backbone.{name}" for name in backbone.ib_layers)
    assert model.last_conv == f"backbone.{backbone.last_conv}"
    assert model.feature_dim == 64


def test_vib_with_several_samples_returns_log_probabilities():
    model, (x, _) = vib_model(samples=3), blobs(8)
    out = model.train()(x)
    assert torch.allclose(out.logsumexp(dim=1), torch.zeros(8), atol=1e-5)


def test_vib_kl_is_zero_for_the_standard_normal():
    from ibrar.methods.vib import gaussian_kl_to_standard

    assert gaussian_kl_to_standard(torch.zeros(2, 3), torch.ones(2, 3)).abs().max() == 0
    assert (gaussian_kl_to_standard(torch.randn(5, 3), torch.rand(5, 3) + 0.1) >= 0).all()


def test_vib_method_needs_a_vib_classifier():
    with pytest.raises(ValueError, match="model"):
        VIB().attach(tiny_cnn())
    with pytest.raises(RuntimeError, match="attach"):
        VIB().loss(recording_forward(tiny_cnn(), []), *blobs(4), None)


def test_vib_loss_adds_beta_times_kl():
    model, (x, y) = vib_model(), blobs(8)
    method = VIB(beta=0.5)
    method.attach(model)
    out = method.loss(recording_forward(model.eval(), []), x, y, None)
    assert out.loss.item() == pytest.approx((out.parts["ce"] + 0.5 * out.parts["kl"]).item(), rel=1e-6)


# ---- the registry -----------------------------------------------------------------------------------

def test_build_method_returns_configured_methods():
    method = build_method("trades", eps=0.03, beta=1.0, variant="official")
    assert isinstance(method, TRADES) and method.beta == 1.0 and method.variant == "official"
    assert isinstance(build_method("ce"), CrossEntropy)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("fgsm_at", {}, "name"),
        ("pgd_at", {"beta": 1.0}, "beta"),
        ("ce", {"eps": 0.1}, "eps"),
        ("pgd_at", {"eps": -1.0}, "eps"),
        ("mart", {"steps": 1.5}, "steps"),
        ("trades", {"variant": "fast"}, "variant"),
        ("vib", {"beta": -1}, "beta"),
    ],
)
def test_build_method_rejects_bad_names_and_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_method(name, **params)


def test_vib_classifier_rejects_bad_arguments():
    with pytest.raises(ValueError, match="layers"):
        VIBClassifier(tiny_cnn(), "nope", num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="bottleneck_dim"):
        VIBClassifier(tiny_cnn(), "2", feature_dim=128, num_classes=NUM_CLASSES, bottleneck_dim=0)
