"""The time estimate printed before an evaluation: the measured cost of a gradient times each attack's count,
AutoAttack's later stages on the examples expected to reach them, and the live re-estimate as pieces finish."""

from __future__ import annotations

import io
import math

import pytest

from attack_fixtures import test_data, trained_model
from ibrar.attacks import ReferenceAutoAttack, build_attack
from ibrar.eval_estimate import (
    Piece,
    Probe,
    autoattack_stage_counts,
    estimate_seconds,
    format_duration,
    gradient_count,
    plan_evaluation,
)
from ibrar.eval_progress import EvalProgress


def test_gradient_counts_follow_the_attacks_budgets():
    model = trained_model()
    assert gradient_count(build_attack("fgsm", model), 10) == 1
    assert gradient_count(build_attack("pgd20", model), 10) == 20
    assert gradient_count(build_attack("cw", model), 10) == 200
    assert gradient_count(build_attack("fab", model), 10) == 10 * 10  # every class's gradient per step
    # AutoAttack's full standard budget: APGD-CE 100, APGD-T 9 x 100, FAB-T 9 x 100 steps of 2.5 gradients
    # each (a gradient, a projection, a forward), Square 5000 forwards (a forward: a third of a gradient)
    assert gradient_count(build_attack("autoattack", model), 10) == pytest.approx(100 + 900 + 2250 + 5000 / 3)


def test_estimate_grows_with_the_attacks_and_says_it_is_rough():
    model = trained_model()
    x, y = test_data(16)
    small, how = estimate_seconds(model, x, y, 1000, {"fgsm": build_attack("fgsm", model)})
    big, _ = estimate_seconds(model, x, y, 1000, {"fgsm": build_attack("fgsm", model),
                                                 "autoattack": build_attack("autoattack", model)})
    assert 0 < small < big and "per forward+backward" in how
    assert format_duration(30) == "30 s" and format_duration(600) == "10 min" and format_duration(7200) == "2.0 h"


def test_a_probe_batch_broken_whole_still_expects_a_few_survivors_in_a_larger_evaluation():
    """Zero survivors in a batch of 16 is not zero in 1,000: the later stages are priced on the Jeffreys
    posterior mean, (0 + 1/2) / (16 + 1), not on nothing."""
    model = trained_model()
    x, y = test_data(16)
    plan = plan_evaluation(model, x, y, 1000, {"autoattack": build_attack("autoattack", model, eps=1.0)}, eps=1.0)
    assert plan.probe.survive == pytest.approx(0.5 / 17)
    assert plan.survivors == pytest.approx(1000 * 0.5 / 17)
    later = [p for p in plan.pieces if p.survivors]
    assert len(later) == 3 and all(p.seconds(plan.probe) > 0 for p in later)
    few = plan_evaluation(model, x, y, 10, {"autoattack": build_attack("autoattack", model, eps=1.0)}, eps=1.0,
                          measured=plan.probe)
    assert "on the 0.3 examples expected to survive" in few.describe()  # what is priced, not a rounded 0


# ---- the plan's arithmetic and its live re-estimate ------------------------------------------------------

MEASURED = Probe(seconds_per_grad=1e-3, forward_share=0.5, clean=0.8, survive=0.1)


def plan_of(*names: str, **kwargs):
    model = trained_model()
    x, y = test_data(4)
    attacks = {name: build_attack(name, model) for name in names}
    return plan_evaluation(model, x, y, 1000, attacks, measured=MEASURED, **kwargs)


def test_autoattack_stages_cost_their_budgets_and_targets():
    counts = autoattack_stage_counts(ReferenceAutoAttack(trained_model()), 10, forward_share=0.5)
    assert counts == {"apgd-ce": 100, "apgd-t": 900, "fab-t": 2250, "square": 2500}
    assert autoattack_stage_counts(ReferenceAutoAttack(trained_model()), 4)["apgd-t"] == 300  # 3 targets


def test_autoattack_after_apgd_ce_is_counted_on_the_expected_survivors_only():
    plan = plan_of("fgsm", "autoattack")
    examples = {p.name: p.examples for p in plan.pieces}
    assert examples == {"fgsm": 800, "autoattack APGD-CE": 800, "autoattack APGD-T": 100,
                        "autoattack FAB-T": 100, "autoattack Square": 100}
    # a clean pass, FGSM (1 gradient + 2 forwards), APGD-CE on 800, the later stages on 100 (each + 1 forward)
    expected = 1000 * 0.5 + 800 * 2 + 800 * 100.5 + 100 * (900.5 + 2250.5 + 2500.5)
    assert plan.seconds() == pytest.approx(expected * 1e-3)
    assert "expected to survive" in plan.describe()


def test_a_cost_per_call_is_paid_once_per_batch():
    """The few examples AutoAttack's later stages attack pay mostly the per-call cost: it is counted per batch."""
    per_call = Probe(seconds_per_grad=1e-3, forward_share=0.5, clean=0.8, survive=0.1, seconds_per_call=0.2)
    model = trained_model()
    x, y = test_data(4)
    plan = plan_evaluation(model, x, y, 1000, {"pgd10": build_attack("pgd10", model)}, measured=per_call,
                           batch_size=100)
    pgd = plan.pieces[0]  # 800 examples in 8 batches of 100, 11 passes each
    assert pgd.seconds(per_call) == pytest.approx(11 * (800 * 1e-3 + 8 * 0.2))
    pgd.examples = 0
    assert pgd.seconds(per_call) == 0


def test_the_masking_check_and_the_steps_curves_are_in_the_plan():
    plan = plan_of("pgd10", large_eps_check=True, curve_steps=[1, 5])
    names = [p.name for p in plan.pieces]
    assert names == ["pgd10", "steps curve pgd1", "steps curve pgd5", "steps curve cw1", "steps curve cw5",
                     "steps curve nifgsm1", "steps curve nifgsm5", "masking check: pgd20 at eps 0.5"]
    assert plan.pieces[-1].grads == 21 and plan.pieces[0].informs_survivors


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_pgd_attack_sets_autoattacks_survivors_and_measured_times_rescale_the_rest(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("ibrar.eval_progress.time.perf_counter", clock)
    plan = plan_of("pgd10", "autoattack")
    stream = io.StringIO()
    progress = EvalProgress(plan, quiet=True, stream=stream)
    planned_pgd = plan.pieces[0].seconds(MEASURED)  # 800 x (10 + 1) gradients
    rest = sum(p.seconds(MEASURED) for p in plan.pieces[1:])
    progress.start("pgd10", 800)
    clock.now = 2 * planned_pgd  # PGD-10 takes twice its estimate
    progress.advance(800, 760)
    progress.finish()
    assert [p.examples for p in plan.pieces if p.survivors] == [40, 40, 40]  # what PGD-10 left robust
    survivors_rest = sum(p.seconds(MEASURED) for p in plan.pieces[1:])
    assert survivors_rest < rest and progress.seconds_left() == pytest.approx(2 * survivors_rest)
    assert stream.getvalue().startswith(f"pgd10: 800 examples attacked, 40 robust, {2 * planned_pgd:.1f} s")
    assert progress.timings == [{"piece": "pgd10", "examples": 800, "estimated_s": pytest.approx(planned_pgd),
                                 "seconds": pytest.approx(2 * planned_pgd)}]


def test_an_autoattack_stage_leaves_the_next_ones_at_most_its_survivors(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("ibrar.eval_progress.time.perf_counter", clock)
    plan = plan_of("autoattack")
    progress = EvalProgress(plan, quiet=True, stream=io.StringIO())
    progress.start("autoattack APGD-CE", 800)
    clock.now = 1.0
    progress.advance(800, 795)
    progress.finish()
    assert [p.examples for p in plan.pieces if p.survivors] == [5, 5, 5]
    progress.start("autoattack APGD-T", 5)
    clock.now = 2.0
    progress.advance(3, 0)  # the current stage by its own rate: 1 s for 3 examples, 2 left
    later = sum(p.seconds(MEASURED) for p in plan.pieces[2:])
    scale = 1.0 / plan.pieces[0].seconds(MEASURED)
    assert progress.seconds_left() == pytest.approx(2 / 3 + later * scale)


def test_a_resumed_autoattack_is_priced_from_where_it_resumes_and_pgd_does_not_overwrite_its_count(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("ibrar.eval_progress.time.perf_counter", clock)
    full = plan_of("pgd10", "autoattack")
    plan = plan_of("pgd10", "autoattack", finished={"autoattack": {"clean": 800, "apgd-ce": 60}})
    examples = {p.name: p.examples for p in plan.pieces}
    # APGD-CE finished; APGD-T attacks exactly the 60 it left; the later stages the prior (100), at most 60
    assert examples == {"pgd10": 800, "autoattack APGD-CE": 0, "autoattack APGD-T": 60, "autoattack FAB-T": 60,
                        "autoattack Square": 60}
    assert plan.resumed == ["apgd-ce"] and "resumes after APGD-CE" in plan.describe()
    assert "on the 60 examples" in plan.describe()
    skipped = full.pieces[1].seconds(MEASURED) + sum(
        (100 - 60) * p.grads * MEASURED.seconds_per_grad for p in full.pieces[2:])
    assert plan.seconds() == pytest.approx(full.seconds() - skipped)

    progress = EvalProgress(plan, quiet=True, stream=io.StringIO())
    progress.start("pgd10", 800)
    progress.advance(800, 770)
    progress.finish()  # PGD-10 leaves 30: a prior for the stages not counted, not for the count APGD-CE left
    assert [p.examples for p in plan.pieces if p.survivors] == [60, 30, 30]
    assert plan.pieces[1].examples == 0


def test_an_expected_survivor_count_below_a_batch_pays_the_expected_calls_not_a_whole_call_per_gradient():
    """0.3 examples expected to reach APGD-T: a call per gradient with probability 1 - exp(-0.3), not always one;
    once a count is known (a PGD attack's survivors, or the stage's real size), every batch is a whole call."""
    per_call = Probe(seconds_per_grad=1e-3, forward_share=0.5, clean=0.8, survive=0.0003, seconds_per_call=0.2)
    model = trained_model()
    x, y = test_data(4)
    plan = plan_evaluation(model, x, y, 1000, {"pgd10": build_attack("pgd10", model),
                                               "autoattack": build_attack("autoattack", model)}, measured=per_call)
    apgd_t = plan.pieces[2]
    assert apgd_t.name == "autoattack APGD-T" and apgd_t.expected and apgd_t.examples == pytest.approx(0.3)
    assert apgd_t.calls() == pytest.approx(1 - math.exp(-0.3))
    assert apgd_t.seconds(per_call) == pytest.approx(apgd_t.grads * (0.3e-3 + (1 - math.exp(-0.3)) * 0.2))
    progress = EvalProgress(plan, quiet=True, stream=io.StringIO())
    progress.start("pgd10", 800)
    progress.advance(800, 798)
    progress.finish()  # PGD-10 leaves 2: no longer a prior below them, a count
    assert not apgd_t.expected and apgd_t.examples == 2 and apgd_t.calls() == 1
    assert Piece("x", 1.0, 300.0, batch=250, expected=True).calls() == 2  # above a batch: the batches it fills
