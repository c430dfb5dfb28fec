"""Behaviour every attack shares: threat model respected, model left as found, effective, seeded,
clear errors; plus unit checks of the pieces (projection, registry, adaptive attack)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attack_fixtures import NUM_CLASSES, TinyCNN, make_data, test_data, trained_model
from ibrar.attacks import (
    APGD,
    APGDT,
    CW,
    FAB,
    FGSM,
    NIFGSM,
    PGD,
    AdaptivePGD,
    Attack,
    ReferenceAutoAttack,
    Square,
    build_attack,
    parse_attack_name,
    pgd_linf,
    project_onto_hyperplane_linf,
)

EPS = 8 / 255

# Small budgets so that the whole file runs in seconds.
FACTORIES = {
    "fgsm": lambda m, seed=None: FGSM(m, EPS, seed=seed),
    "pgd": lambda m, seed=None: PGD(m, EPS, steps=5, seed=seed),
    "pgd-cw-restarts": lambda m, seed=None: PGD(m, EPS, steps=3, restarts=2, loss="cw", seed=seed),
    "nifgsm": lambda m, seed=None: NIFGSM(m, EPS, steps=5, seed=seed),
    "sinifgsm": lambda m, seed=None: NIFGSM(m, EPS, steps=5, m=2, seed=seed),
    "cw": lambda m, seed=None: CW(m, steps=20, seed=seed),
    "fab": lambda m, seed=None: FAB(m, EPS, steps=5, n_restarts=2, seed=seed),
    "fab-t": lambda m, seed=None: FAB(m, EPS, steps=5, targeted=True, n_target_classes=3, seed=seed),
    "apgd-ce": lambda m, seed=None: APGD(m, EPS, steps=10, seed=seed),
    "apgd-dlr": lambda m, seed=None: APGD(m, EPS, steps=10, loss="dlr", n_restarts=2, seed=seed),
    "apgd-t": lambda m, seed=None: APGDT(m, EPS, steps=10, n_target_classes=3, seed=seed),
    # 300 queries: the window schedule is stretched over them (the standard schedule assumes 5000)
    "square": lambda m, seed=None: Square(m, EPS, n_queries=300, rescale_schedule=True, seed=seed),
}


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def adversarials() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each attack run once (seeded) on the same 32 examples; shared by the property tests."""
    model = trained_model()
    x, y = test_data(32)
    return {name: (x, y, make(model, 0)(x, y)) for name, make in FACTORIES.items()}


@pytest.mark.parametrize("name", FACTORIES)
def test_output_stays_in_threat_model(adversarials, name):
    x, _, x_adv = adversarials[name]
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if name != "cw":
        assert (x_adv - x).abs().max() <= EPS + 1e-6


@pytest.mark.parametrize("name", FACTORIES)
def test_attack_lowers_accuracy_of_undefended_model(adversarials, name):
    x, y, x_adv = adversarials[name]
    model = trained_model()
    clean = accuracy(model, x, y)
    assert clean > 0.9
    assert accuracy(model, x_adv, y) < clean - 0.25


@pytest.mark.parametrize("name", FACTORIES)
def test_attack_is_deterministic_under_a_seed(adversarials, name):
    x, y, x_adv = adversarials[name]
    torch.manual_seed(12345)  # the global RNG must not matter
    again = FACTORIES[name](trained_model(), 0)(x, y)
    assert torch.equal(x_adv, again)


@pytest.mark.parametrize("name", FACTORIES)
def test_model_mode_bn_stats_and_param_grads_unchanged(name):
    torch.manual_seed(0)
    model = TinyCNN()
    model.train()
    model.fc1.eval()  # a mixed mode must come back exactly
    x, y = make_data(8, seed=5)
    with torch.no_grad():
        model(x)  # non-trivial running stats
    modes = {n: m.training for n, m in model.named_modules()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    FACTORIES[name](model, 0)(x, y)
    assert {n: m.training for n, m in model.named_modules()} == modes
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw", "fab", "square"])
def test_batch_of_one_and_empty_batch(name):
    model = trained_model()
    x, y = test_data(1)
    attack = FACTORIES[name](model, 0)
    assert attack(x, y).shape == x.shape
    assert attack(x[:0], y[:0]).shape == (0, *x.shape[1:])


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.full((2, 3, 8, 8), 1.5), torch.zeros(2, dtype=torch.long), r"\[0, 1\]"),
        (torch.full((2, 3, 8, 8), -0.1), torch.zeros(2, dtype=torch.long), r"\[0, 1\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "floating-point"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(3, dtype=torch.long), "same batch size"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 3, 8, 8), torch.full((2,), NUM_CLASSES, dtype=torch.long), "class indices"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.float16), torch.zeros(2, dtype=torch.long), "float32 or float64"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.long), "float32 or float64"),
    ],
)
def test_bad_input_raises_value_error(x, y, match):
    with pytest.raises(ValueError, match=match):
        PGD(trained_model(), steps=1)(x, y)


def test_bad_parameters_raise_value_error():
    model = trained_model()
    with pytest.raises(ValueError, match="eps"):
        PGD(model, eps=-1)
    with pytest.raises(ValueError, match="loss"):
        PGD(model, loss="mse")
    with pytest.raises(ValueError, match="restarts"):
        PGD(model, restarts=0)
    with pytest.raises(ValueError, match="model"):
        FGSM("not a model")  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    eps=st.floats(0.0, 0.5),
    steps=st.integers(0, 3),
    fgsm=st.booleans(),
)
def test_pgd_and_fgsm_stay_in_eps_ball_and_box(seed, eps, steps, fgsm):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 8, 8, generator=g)
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    y = torch.randint(NUM_CLASSES, (4,), generator=g)
    model = trained_model()
    attack = FGSM(model, eps) if fgsm else PGD(model, eps, alpha=eps / 2, steps=steps, seed=seed)
    x_adv = attack(x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(0.0, 1.0), spread=st.floats(0.0, 3.0), pinned=st.booleans())
def test_the_projection_by_precomputed_bounds_is_the_clip_then_clamp_bit_for_bit(seed, eps, spread, pinned):
    """A clamp to [0, 1] is monotone, so clamping after the clip to [x - eps, x + eps] is clamping x_adv to that
    interval's bounds clamped to [0, 1]: the one-clamp projection iterative attacks use equals the old one
    element for element, for an x outside [0, 1] too, NaN kept."""
    from ibrar.attacks import project_linf
    from ibrar.attacks.base import linf_box

    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(64, generator=g) - 0.5) * spread + 0.5  # inside [0, 1] when spread <= 1, else past it
    if pinned:
        x[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    x_adv = x + (torch.rand(64, generator=g) - 0.5) * 4 * max(eps, 1e-3)
    x_adv[::7] = x[::7] + eps  # on the ball's surface
    x_adv[5] = float("nan")
    old = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    new = project_linf(x_adv, x, eps, linf_box(x, eps))
    torch.testing.assert_close(new, old, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(project_linf(x_adv, x, eps), old, rtol=0, atol=0, equal_nan=True)


def test_pgd_linf_accepts_any_loss_and_keeps_model_mode():
    model = trained_model()
    x, y = test_data(8)
    with torch.no_grad():
        clean_logits = model(x)

    def kl(logits, target_logits):
        return torch.nn.functional.kl_div(logits.log_softmax(1), target_logits.softmax(1), reduction="sum")

    x_adv = pgd_linf(model, x, clean_logits, kl, EPS, EPS / 4, 3, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        assert kl(model(x_adv), clean_logits) > kl(model(x), clean_logits)
    assert not model.training


def test_hyperplane_projection_is_minimal_and_reaches_the_plane():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, 20, generator=g)
    w = torch.randn(64, 20, generator=g)
    b = (w * torch.rand(64, 20, generator=g)).sum(1)  # a plane that meets the box
    d = project_onto_hyperplane_linf(t, w, b)
    assert torch.allclose((w * (t + d)).sum(1), b, atol=1e-4)
    assert (t + d).min() >= -1e-6 and (t + d).max() <= 1 + 1e-6
    # Minimal: shrinking the step a little can no longer reach the plane within the box.
    radius = d.abs().amax(1, keepdim=True)
    room = torch.where(torch.sign(b - (w * t).sum(1))[:, None] * torch.sign(w) > 0, 1 - t, t)
    reach = (w.abs() * torch.minimum(0.99 * radius, room)).sum(1)
    assert (reach < (b - (w * t).sum(1)).abs() + 1e-6).all()


def test_registry_parses_names_and_rejects_unknown():
    model = trained_model()
    assert parse_attack_name("pgd") == ("pgd", 10)
    assert parse_attack_name("pgd100") == ("pgd", 100)
    assert parse_attack_name("cw") == ("cw", 200)
    assert parse_attack_name("cw50") == ("cw", 50)
    assert parse_attack_name("apgd-t") == ("apgd-t", 100)
    assert parse_attack_name("nifgsm10") == ("nifgsm", 10)
    assert isinstance(build_attack("fab", model), FAB)
    assert build_attack("pgd100", model, eps=4 / 255).steps == 100
    assert isinstance(build_attack("autoattack", model), ReferenceAutoAttack)
    assert isinstance(build_attack("square", model, n_queries=10), Square)
    with pytest.raises(ValueError, match="pgd"):
        build_attack("deepfool", model)
    with pytest.raises(ValueError, match="regularizer"):
        build_attack("adaptive10", model)


def test_adaptive_pgd_maximises_ce_plus_ib_penalty():
    regularizer_mod = pytest.importorskip("ibrar.regularizer")
    model = trained_model()
    x, y = test_data(32)
    layers = ["conv", "fc1"]
    reg = regularizer_mod.IBRegularizer(layers=layers, num_classes=NUM_CLASSES, alpha=0.5, beta=0.5)
    attack = build_attack("adaptive5", model, regularizer=reg, seed=0)
    assert isinstance(attack, AdaptivePGD) and attack.layers == tuple(layers)
    x_adv = attack(x, y)
    assert isinstance(attack, Attack) and (x_adv - x).abs().max() <= EPS + 1e-6
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.25
    assert all(p.grad is None for p in model.parameters())


def test_the_adaptive_attack_on_a_batch_of_one_is_pgd_on_cross_entropy():
    """An evaluation's last batch can hold one example; every HSIC of one example is 0, so the loss is CE."""
    from ibrar.regularizer import IBRegularizer

    model = trained_model()
    x, y = test_data(1)
    reg = IBRegularizer(layers=["conv", "fc1"], num_classes=NUM_CLASSES, alpha=0.5, beta=0.5)
    adaptive = AdaptivePGD(model, reg, eps=EPS, steps=5, seed=3)(x, y)
    assert torch.equal(adaptive, PGD(model, EPS, steps=5, seed=3)(x, y))


def test_square_returns_the_examples_the_model_already_gets_wrong_as_they_are():
    model = trained_model()
    x, y = test_data(32)
    y = torch.where(torch.arange(len(y)) % 2 == 0, (y + 1) % NUM_CLASSES, y)  # half of them wrong labels
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    x_adv = FACTORIES["square"](model, 0)(x, y)
    assert wrong.any() and torch.equal(x_adv[wrong], x[wrong])
    assert (x_adv[~wrong] != x[~wrong]).any()


def test_apgd_with_the_dlr_loss_needs_three_classes():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    x, y = make_data(4, seed=0)
    with pytest.raises(ValueError, match=">= 3 classes"):
        APGD(model, EPS, steps=2, loss="dlr")(x, y % 2)


def test_square_schedule_follows_the_iteration_count_as_the_reference_standard_version():
    from ibrar.attacks.square import square_fraction

    # pyautoattack's standard AutoAttack builds Square with resc_schedule=False: p halves after iteration 10
    assert square_fraction(0.8, 10, 300) == 0.8 and square_fraction(0.8, 11, 300) == 0.4
    assert square_fraction(0.8, 8001, 5000) == 0.8 / 512
    # rescaled (torchattacks' default): iteration 11 of 300 is 366 on the 10,000 scale
    assert square_fraction(0.8, 11, 300, rescale=True) == 0.8 / 8
    assert Square(trained_model()).params()["rescale_schedule"] is False



def test_apgd_halves_its_step_when_exactly_rho_of_the_steps_raised_the_loss():
    from ibrar.attacks.apgd import halve_step

    increases = torch.tensor([2.0, 3.0, 4.0])  # of a period of 4 steps, rho = 0.75: 3 is exactly rho * period
    halved_last = torch.ones(3, dtype=torch.bool)  # so only the increase count decides
    best = torch.ones(3)
    assert halve_step(increases, 4, 0.75, halved_last, best, best).tolist() == [True, True, False]
    # not halved last time and no new best since: halve whatever the count
    assert halve_step(increases, 4, 0.75, ~halved_last, best, best).tolist() == [True, True, True]
    assert halve_step(increases, 4, 0.75, ~halved_last, best + 1, best).tolist() == [True, True, False]
