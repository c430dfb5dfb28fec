"""A verdict on gradient masking for one evaluated run, from what its eval.json holds: ibrar's masking checks
(`ibrar.evaluate.masking_warnings`), the reference AutoAttack's own checks and its stages, PGD-10 against
AutoAttack on the same test images, and the PGD steps curve where it ran. It reads the evidence; it runs nothing.

The verdicts: *signs of gradient masking* when any check warned, or AutoAttack breaks more than half of what
PGD-10 leaves robust by more than `TOLERANCE` (the rule of ibrar's check, for files written before it); *no
robustness to mask* when PGD-10 leaves less than `TOLERANCE` of the examples robust (nothing for masking to
hide); *not decided* when AutoAttack, or PGD-10 on AutoAttack's test images, has not run; else *no sign of
gradient masking*.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibrar.evaluation_record import Evaluation

SIGNS = "signs of gradient masking"
NOTHING_TO_MASK = "no robustness to mask"
UNDECIDED = "not decided"
NONE_SEEN = "no sign of gradient masking"
TOLERANCE = 0.02  # as ibrar's masking checks: a fraction of the examples
ATTACK = "pgd10"  # the paper's attack, set against AutoAttack
OVERSTATES = "overstates robustness"  # in the warning of ibrar's check, by which the verdict knows it


def overstates(accuracy: float, autoattack: float, tolerance: float = TOLERANCE) -> bool:
    """Whether AutoAttack breaks more than half of what a PGD-type attack leaves robust, by more than `tolerance`:
    the rule of ibrar's check (`ibrar.evaluate.masking_warnings`) and of the verdict."""
    gap = accuracy - autoattack
    return gap > tolerance and gap > accuracy / 2


@dataclass(frozen=True)
class MaskingVerdict:
    verdict: str
    evidence: tuple[str, ...]  # sentences with the figures, the warnings last
    paper_attack: float | None  # PGD-10 accuracy (fraction) on AutoAttack's examples
    autoattack: float | None  # AutoAttack's accuracy (fraction)
    n: int | None  # how many test images the two share

    def text(self) -> str:
        return f"{self.verdict}: {'; '.join(self.evidence)}" if self.evidence else self.verdict


def on_autoattacks_examples(evaluation: Evaluation) -> Evaluation | None:
    """The evaluation whose examples AutoAttack ran on: the whole one, or the GPU kit's subset evaluation (kept
    under `subsets`, with PGD-10 on the same images) when AutoAttack ran on a subset of the test set; None when
    that subset's evaluation is not in the file (nothing to set AutoAttack against on the same images)."""
    entry = evaluation.attack("autoattack")
    if entry is None or entry.n is None or entry.n == evaluation.n:
        return evaluation
    subset = evaluation.subsets.get(f"n{entry.n}")
    return Evaluation.from_dict(subset) if isinstance(subset, dict) else None


def masking_verdict(evaluation: Evaluation) -> MaskingVerdict:
    same = on_autoattacks_examples(evaluation)
    if same is None:
        entry = evaluation.attack("autoattack")
        return MaskingVerdict(UNDECIDED, (f"AutoAttack ran on {entry.n:,} of the {evaluation.n:,} test images and "
                                          "the file holds no PGD-10 on those images",), None, entry.accuracy, None)
    pgd, autoattack = same.attack(ATTACK), same.attack("autoattack")
    pgd_acc = None if pgd is None else pgd.accuracy
    aa_acc = None if autoattack is None else autoattack.accuracy
    evidence = []
    if pgd_acc is not None and aa_acc is not None:
        evidence.append(f"PGD-10 {pgd_acc:.1%} → AutoAttack {aa_acc:.1%} on the same {same.n:,} test images")
    elif pgd_acc is not None:
        evidence.append(f"PGD-10 {pgd_acc:.1%} on {same.n:,} test images, AutoAttack not run")
    elif aa_acc is not None:
        evidence.append(f"AutoAttack {aa_acc:.1%} on {same.n:,} test images, PGD-10 not run beside it")
    curve = evaluation.curves.get("pgd") or {}
    if len(curve) > 1:
        steps = sorted(curve, key=int)
        first, last = curve[steps[0]], curve[steps[-1]]
        if first is not None and last is not None:
            evidence.append(f"PGD by steps {steps[0]} → {steps[-1]}: {first:.1%} → {last:.1%}")
    # ibrar's checks (the GPU kit's merged file holds its subset's too) and the reference's own, where it ran
    warnings = [*evaluation.warnings, *((same.autoattack or {}).get("warnings") or [])]
    evidence += [f"warning: {w.rstrip('.')}" for w in warnings]
    # the rule of ibrar's check, applied here too: an eval.json written before that check existed has no warning
    overstated = pgd_acc is not None and aa_acc is not None and overstates(pgd_acc, aa_acc)
    if overstated and not any(OVERSTATES in w for w in warnings):
        evidence.append("AutoAttack breaks more than half of what PGD-10 leaves robust: PGD-10 overstates it")
    if warnings or overstated:
        verdict = SIGNS
    elif pgd_acc is not None and pgd_acc < TOLERANCE:
        verdict = NOTHING_TO_MASK
    elif aa_acc is None or pgd_acc is None:  # without both on the same images, the rule cannot be applied
        verdict = UNDECIDED
    else:
        verdict = NONE_SEEN
    return MaskingVerdict(verdict, tuple(evidence), pgd_acc, aa_acc, same.n if aa_acc is not None else None)
