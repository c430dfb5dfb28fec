"""The evaluation API: exact per-attack and worst-case accuracies on a fixed subset, report fields,
edge cases, the steps curve and the gradient-masking checks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from attack_fixtures import test_data, trained_model
from ibrar.attacks import FGSM, PGD, Square
from ibrar.evaluate import EvalReport, evaluate, format_table, masking_warnings, steps_curve

EPS = 6 / 255  # partial robustness on the tiny model, so that the worst case is informative


@pytest.fixture(scope="module")
def report() -> EvalReport:
    model = trained_model()
    x, y = test_data(96)
    attacks = {"fgsm": FGSM(model, EPS), "pgd5": PGD(model, EPS, steps=5), "square": Square(model, EPS, 200)}
    return evaluate(model, x, y, attacks, batch_size=40, n=64, seed=3, eps=EPS)


def test_worst_case_is_never_above_any_attack(report):
    for r in report.attacks:
        assert report.worst_case <= r.accuracy <= report.clean
    assert report.worst_case < report.clean


def test_worst_case_is_the_per_example_and_of_the_attacks(report):
    robust = torch.stack(list(report.robust.values())).all(0)
    assert report.worst_case == pytest.approx(robust.float().mean().item())


def test_report_fields_and_json(report):
    assert report.n == 64 and report.seed == 3 and len(report.indices) == 64
    d = json.loads(json.dumps(report.to_dict()))
    assert {"n", "seed", "clean", "worst_case", "attacks"} <= d.keys()
    (pgd,) = [a for a in d["attacks"] if a["name"] == "pgd5"]
    assert pgd["params"]["steps"] == 5
    assert {"accuracy", "n_robust", "seconds", "loss_clean", "loss_adv"} <= pgd.keys()
    assert pgd["n_robust"] == int(report.robust["pgd5"].sum())
    assert "worst case" in format_table(report) and "pgd5" in format_table(report)


def test_accuracies_match_an_independent_recount():
    """Clean and robust counts recomputed here, outside evaluate, on the examples it chose."""
    model = trained_model()
    x, y = test_data(96)
    rep = evaluate(model, x, y, {"fgsm": FGSM(model, EPS)}, batch_size=40, n=64, seed=3)
    xs, ys = x[rep.indices], y[rep.indices]
    with torch.no_grad():
        correct = model(xs).argmax(1) == ys
        robust = correct & (model(FGSM(model, EPS)(xs, ys)).argmax(1) == ys)
    assert rep.clean == correct.float().mean().item()
    result = rep.result("fgsm")
    assert torch.equal(rep.robust["fgsm"], robust)
    assert result.n_robust == int(robust.sum()) and result.accuracy == robust.float().mean().item()
    assert 0 < result.n_robust < int(correct.sum())  # FGSM breaks some of the examples, not all


def test_float64_images_are_evaluated_in_the_models_dtype():
    model = trained_model()
    x, y = test_data(32)
    single = evaluate(model, x, y, ["fgsm"], n=24, seed=1, eps=EPS)
    double = evaluate(model, x.double(), y, ["fgsm"], n=24, seed=1, eps=EPS)
    assert double.clean == single.clean and torch.equal(double.robust["fgsm"], single.robust["fgsm"])
    assert double.result("fgsm").accuracy == single.result("fgsm").accuracy


def test_subset_is_fixed_by_the_seed():
    model = trained_model()
    x, y = test_data(96)
    a = evaluate(model, x, y, {"fgsm": FGSM(model, EPS)}, n=10, seed=7)
    b = evaluate(model, x, y, {"fgsm": FGSM(model, EPS)}, n=10, seed=7)
    assert torch.equal(a.indices, b.indices)
    assert a.to_dict()["attacks"][0]["accuracy"] == b.attacks[0].accuracy


def test_cascade_gives_the_same_worst_case_for_deterministic_attacks():
    # With random starts the cascade draws different noise per example, so only deterministic
    # attacks give identical numbers.
    model = trained_model()
    x, y = test_data(96)
    attacks = {"fgsm": FGSM(model, EPS), "pgd5": PGD(model, EPS, steps=5, random_start=False)}
    full = evaluate(model, x, y, attacks, n=64, seed=3, eps=EPS)
    cascade = evaluate(model, x, y, attacks, n=64, seed=3, worst_case_only=True, eps=EPS)
    assert cascade.attacks[0].accuracy is None
    assert cascade.attacks[1].n_attacked <= full.attacks[1].n_attacked
    assert cascade.worst_case == full.worst_case


def test_names_uint8_images_batch_of_one_and_mode_restored():
    model = trained_model()
    x, y = test_data(1)
    model.train()
    try:
        rep = evaluate(model, (x * 255).round().to(torch.uint8), y, ["fgsm", "pgd"], eps=EPS)
        assert model.training
    finally:
        model.eval()
    assert rep.n == 1 and [r.name for r in rep.attacks] == ["fgsm", "pgd"]


def test_empty_subset_raises_clear_error():
    model = trained_model()
    x, y = test_data(8)
    with pytest.raises(ValueError, match="at least one example"):
        evaluate(model, x[:0], y[:0], ["fgsm"])
    with pytest.raises(ValueError, match="n must be"):
        evaluate(model, x, y, ["fgsm"], n=0)
    with pytest.raises(ValueError, match="name must be one of"):
        evaluate(model, x, y, ["nope"])


def test_steps_curve_has_one_accuracy_per_step_count():
    model = trained_model()
    x, y = test_data(32)
    curve = steps_curve(model, x, y, "pgd", steps=[1, 3], eps=EPS)
    assert list(curve) == [1, 3] and all(0 <= a <= 1 for a in curve.values())
    assert curve[3] <= curve[1] + 0.1
    with pytest.raises(ValueError, match="attack_family"):
        steps_curve(model, x, y, "deepfool")


def test_no_masking_warnings_for_an_honest_model(report):
    model = trained_model()
    x, y = test_data(96)
    warnings = masking_warnings(report, model, x, y, curve={1: 0.8, 5: 0.5}, large_eps=0.5)
    assert warnings == []


class _MaskedModel(nn.Module):
    """Rounds its input: zero gradients everywhere, the textbook masked defence."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 8) / 8)


def test_masking_warnings_fire_on_a_masked_model():
    masked = _MaskedModel(trained_model())
    x, y = test_data(64)
    rep = evaluate(masked, x, y, {"pgd": PGD(masked, 0.2, steps=5), "square": Square(masked, 0.2, 300)}, eps=0.2)
    warnings = masking_warnings(rep, masked, x, y, curve={1: 0.5, 10: 0.6}, large_eps=0.5)
    text = "\n".join(warnings)
    assert "rises with more steps" in text
    assert "beats every white-box" in text or "did not rise" in text


def test_cw_never_enters_the_linf_worst_case():
    from ibrar.attacks import CW

    model = trained_model()
    x, y = test_data(64)
    rep = evaluate(model, x, y, {"fgsm": FGSM(model, EPS), "cw": CW(model, steps=20)}, eps=EPS)
    d = json.loads(json.dumps(rep.to_dict()))
    linf, l2 = d["worst_cases"]
    assert linf == {"norm": "Linf", "eps": EPS, "attacks": ["fgsm"], "accuracy": d["worst_case"]}
    assert d["worst_case"] == rep.result("fgsm").accuracy > rep.result("cw").accuracy  # CW is stronger, unbounded
    assert l2["norm"] == "L2" and l2["eps"] is None and l2["attacks"] == ["cw"]
    cw = d["attacks"][1]
    assert cw["norm"] == "L2" and cw["eps"] is None and cw["median_l2"] > 0
    assert "median_l2" not in d["attacks"][0]
    table = format_table(rep)
    assert "Linf 6/255" in table and "over fgsm" in table and "over cw" in table
