"""Our attacks against the independent reference implementation (torchattacks 3.5.1, test-only).

Same tiny trained model, same 128 held-out examples, eps = 5/255 (where the model is partly
robust, so accuracies are informative rather than all 0% or 100%). Tolerances:

- FGSM: the same tensor (up to 1e-6).
- PGD without random start: the same robust accuracy and at least 95% of examples give the same
  tensor (the two sum vs average the loss, which can flip the sign of a vanishing gradient).
- NI-FGSM: within 2 percentage points (same algorithm; we guard a zero gradient norm).
- CW (c=0.01, 100 steps, so that it only partly succeeds): accuracy within 5 points and median L2
  distance within 10% (we take the margin over the other classes with -inf masking, torchattacks
  with a 0 mask, which differs when all other logits are negative).
- APGD-CE/DLR, APGD-T, FAB, FAB-T: within 5 points (different random draws; our checkpoint test
  counts increases since the last checkpoint; our FAB projection is our own).
- Square: within 10 points (a random search with 300 queries; its variance is larger), with the
  window schedule not rescaled to the budget on both sides, as the standard AutoAttack runs it.

APGD-CE, APGD-T and Square are also checked against the reference code itself (pyautoattack, the
package ibrar's `autoattack` runs), with the same tolerances. ibrar has no AutoAttack cascade of its
own: `autoattack` is the reference (tests/test_reference_autoattack.py).
"""

from __future__ import annotations

import pytest
import torch

from attack_fixtures import test_data, trained_model
from ibrar.attacks import APGD, APGDT, CW, FAB, FGSM, NIFGSM, PGD, Square

ta = pytest.importorskip("torchattacks")

EPS = 5 / 255
N = 128


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def setup():
    model = trained_model()
    x, y = test_data(N)
    return model, x, y


def test_fgsm_matches_exactly(setup):
    model, x, y = setup
    ours = FGSM(model, EPS)(x, y)
    ref = ta.FGSM(model, eps=EPS)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


def test_pgd_without_random_start_matches(setup):
    model, x, y = setup
    ours = PGD(model, EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    ref = ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    same = ((ours - ref).abs().flatten(1).amax(1) < 1e-6).float().mean().item()
    assert same >= 0.95
    assert accuracy(model, ours, y) == pytest.approx(accuracy(model, ref, y), abs=1 / N + 1e-9)


def test_pgd_with_random_start_within_tolerance(setup):
    model, x, y = setup
    torch.manual_seed(0)
    ref = accuracy(model, ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y), y)
    ours = accuracy(model, PGD(model, EPS, alpha=EPS / 4, steps=10, seed=0)(x, y), y)
    assert abs(ours - ref) <= 0.05


def _pyautoattack(kind, model, **kwargs):
    """One attack of the reference AutoAttack package, called like ours: attack(x, y) -> x_adv."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.square import SquareAttack

    cls = {"apgd-ce": APGDAttack, "apgd-t": APGDAttack_targeted, "square": SquareAttack}[kind]
    attack = cls(model, eps=EPS, norm="Linf", seed=0, device="cpu", **kwargs)
    return lambda x, y: attack.perturb(x, y)


def test_cw_accuracy_and_distance_within_tolerance(setup):
    model, x, y = setup
    ours = CW(model, c=0.01, steps=100, lr=0.01)(x, y)
    ref = ta.CW(model, c=0.01, steps=100, lr=0.01)(x, y)
    assert abs(accuracy(model, ours, y) - accuracy(model, ref, y)) <= 0.05
    l2_ours = (ours - x).flatten(1).norm(dim=1).median()
    l2_ref = (ref - x).flatten(1).norm(dim=1).median()
    assert abs(l2_ours - l2_ref) <= 0.1 * l2_ref


@pytest.mark.parametrize(
    ("name", "ours", "ref", "tolerance"),
    [
        ("nifgsm", lambda m: NIFGSM(m, EPS, alpha=EPS / 4), lambda m: ta.NIFGSM(m, eps=EPS, alpha=EPS / 4),
         0.02),
        ("fab", lambda m: FAB(m, EPS, steps=10), lambda m: ta.FAB(m, eps=EPS, steps=10), 0.05),
        ("fab-t", lambda m: FAB(m, EPS, steps=10, targeted=True, seed=0),
         lambda m: ta.FAB(m, eps=EPS, steps=10, multi_targeted=True), 0.05),
        ("apgd-ce", lambda m: APGD(m, EPS, steps=20, seed=0), lambda m: ta.APGD(m, eps=EPS, steps=20), 0.05),
        ("apgd-dlr", lambda m: APGD(m, EPS, steps=20, loss="dlr", seed=0),
         lambda m: ta.APGD(m, eps=EPS, steps=20, loss="dlr"), 0.05),
        ("apgd-t", lambda m: APGDT(m, EPS, steps=20, seed=0), lambda m: ta.APGDT(m, eps=EPS, steps=20), 0.05),
        ("square", lambda m: Square(m, EPS, n_queries=300, seed=0),
         lambda m: ta.Square(m, eps=EPS, n_queries=300, resc_schedule=False), 0.10),
        ("apgd-ce-pyautoattack", lambda m: APGD(m, EPS, steps=20, seed=0),
         lambda m: _pyautoattack("apgd-ce", m, n_iter=20), 0.05),
        ("apgd-t-pyautoattack", lambda m: APGDT(m, EPS, steps=20, seed=0),
         lambda m: _pyautoattack("apgd-t", m, n_iter=20, n_target_classes=9), 0.05),
        ("square-pyautoattack", lambda m: Square(m, EPS, n_queries=300, seed=0),
         lambda m: _pyautoattack("square", m, n_queries=300, resc_schedule=False), 0.10),
    ],
)
def test_robust_accuracy_within_tolerance(setup, name, ours, ref, tolerance):
    model, x, y = setup
    torch.manual_seed(0)
    acc_ref = accuracy(model, ref(model)(x, y), y)
    acc_ours = accuracy(model, ours(model)(x, y), y)
    assert abs(acc_ours - acc_ref) <= tolerance, (name, acc_ours, acc_ref)
