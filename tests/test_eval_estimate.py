"""The time estimate printed before an evaluation: the measured cost of a gradient times each attack's count."""

from __future__ import annotations

import pytest

from attack_fixtures import test_data, trained_model
from ibrar.attacks import build_attack
from ibrar.eval_estimate import estimate_seconds, format_duration, gradient_count


def test_gradient_counts_follow_the_attacks_budgets():
    model = trained_model()
    assert gradient_count(build_attack("fgsm", model), 10) == 1
    assert gradient_count(build_attack("pgd20", model), 10) == 20
    assert gradient_count(build_attack("cw", model), 10) == 200
    assert gradient_count(build_attack("fab", model), 10) == 10 * 10  # every class's gradient per step
    # AutoAttack's full standard budget: APGD-CE 100, APGD-T and FAB-T 9 x 100 each, Square 5000 forwards
    assert gradient_count(build_attack("autoattack", model), 10) == pytest.approx(100 + 2 * 9 * 100 + 5000 / 3)


def test_estimate_grows_with_the_attacks_and_says_it_is_rough():
    model = trained_model()
    x, y = test_data(16)
    small, how = estimate_seconds(model, x, y, 1000, {"fgsm": build_attack("fgsm", model)})
    big, _ = estimate_seconds(model, x, y, 1000, {"fgsm": build_attack("fgsm", model),
                                                 "autoattack": build_attack("autoattack", model)})
    assert 0 < small < big and "per forward+backward" in how
    assert format_duration(30) == "30 s" and format_duration(600) == "10 min" and format_duration(7200) == "2.0 h"
