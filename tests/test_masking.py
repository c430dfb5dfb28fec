"""The gradient-masking verdict of a run, read from its eval.json: each verdict from the evidence that decides it,
and AutoAttack set against PGD-10 on the same test images, also when the GPU kit ran AutoAttack on a subset."""

from __future__ import annotations

from pathlib import Path

from ibrar.evaluation_record import Evaluation
from ibrar.masking import NONE_SEEN, NOTHING_TO_MASK, SIGNS, UNDECIDED, masking_verdict

REPO = Path(__file__).resolve().parents[1]


def _evaluation(pgd: float, aa: float | None = None, n: int = 1000, **extra: object) -> Evaluation:
    attacks = [{"name": "pgd10", "accuracy": pgd}]
    if aa is not None:
        attacks.append({"name": "autoattack", "accuracy": aa})
    return Evaluation.from_dict({"n": n, "seed": 0, "clean": 0.8, "attacks": attacks, **extra})


def test_a_network_pgd10_already_breaks_has_no_robustness_to_mask():
    verdict = masking_verdict(_evaluation(0.015, 0.0))
    assert verdict.verdict == NOTHING_TO_MASK
    assert verdict.evidence == ("PGD-10 1.5% → AutoAttack 0.0% on the same 1,000 test images",)


def test_robustness_that_autoattack_confirms_with_no_warning_shows_no_sign_of_masking():
    verdict = masking_verdict(_evaluation(0.30, 0.27))
    assert verdict.verdict == NONE_SEEN and (verdict.paper_attack, verdict.autoattack, verdict.n) == (0.30, 0.27, 1000)


def test_robustness_without_autoattack_is_not_decided():
    verdict = masking_verdict(_evaluation(0.30))
    assert verdict.verdict == UNDECIDED and "AutoAttack not run" in verdict.text()


def test_any_warning_of_ibrars_checks_or_of_the_reference_is_a_sign_of_masking():
    warning = "AutoAttack breaks 100% of the examples pgd10 leaves robust: pgd10 overstates robustness"
    ours = masking_verdict(_evaluation(0.095, 0.0, warnings=[warning]))
    assert ours.verdict == SIGNS and ours.evidence[-1] == f"warning: {warning}"  # said once, not again by the rule
    reference = masking_verdict(_evaluation(0.30, 0.28, autoattack={"warnings": ["the model is randomised."]}))
    assert reference.verdict == SIGNS and "warning: the model is randomised" in reference.evidence


def test_autoattack_taking_most_of_pgd10s_robustness_is_a_sign_even_without_a_stored_warning():
    verdict = masking_verdict(_evaluation(0.026, 0.0))  # an eval.json from before ibrar's check existed
    assert verdict.verdict == SIGNS and "PGD-10 overstates it" in verdict.evidence[-1]
    assert masking_verdict(_evaluation(0.03, 0.015)).verdict == NONE_SEEN  # half, not more, by under 2 points


def test_the_steps_curve_is_part_of_the_evidence():
    verdict = masking_verdict(_evaluation(0.30, 0.27, curves={"pgd": {"1": 0.5, "50": 0.26, "10": 0.3}}))
    assert "PGD by steps 1 → 50: 50.0% → 26.0%" in verdict.evidence


def test_the_gpu_kits_subset_autoattack_is_set_against_pgd10_on_the_same_subset(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    import stages

    full = _evaluation(0.17, n=10000).to_dict()
    subset = _evaluation(0.18, 0.05, n=1000, warnings=["black-box square beats every white-box attack"]).to_dict()
    merged = Evaluation.from_dict(stages.merge_evaluations(full, subset, "autoattack"))
    verdict = masking_verdict(merged)
    assert (verdict.paper_attack, verdict.autoattack, verdict.n) == (0.18, 0.05, 1000)
    assert verdict.evidence[0] == "PGD-10 18.0% → AutoAttack 5.0% on the same 1,000 test images"
    assert verdict.verdict == SIGNS and "subset n=1000" in verdict.text()  # the subset's warnings, as merged


def test_autoattack_without_pgd10_on_its_images_is_not_decided():
    alone = Evaluation.from_dict({"n": 1000, "seed": 0, "clean": 0.8,
                                  "attacks": [{"name": "nifgsm", "accuracy": 0.11},
                                              {"name": "autoattack", "accuracy": 0.0}]})
    verdict = masking_verdict(alone)
    assert verdict.verdict == UNDECIDED and "PGD-10 not run beside it" in verdict.text()
    # AutoAttack on a seeded subset whose PGD-10 the file lacks: never set against PGD-10 on the whole test set
    subset_only = _evaluation(0.09, n=10000).to_dict()
    subset_only["attacks"].append({"name": "autoattack", "accuracy": 0.05, "n": 1000})
    verdict = masking_verdict(Evaluation.from_dict(subset_only))
    assert verdict.verdict == UNDECIDED and "1,000 of the 10,000" in verdict.text() and verdict.n is None
