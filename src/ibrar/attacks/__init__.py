"""Adversarial attacks for robustness evaluation and adversarial training, one file per attack.

Every attack is ``Attack(model, ...)`` called as ``attack(x, y) -> x_adv`` on a batch in [0, 1];
``pgd_linf`` is the functional core the training methods use for their inner maximisation.
``ReferenceAutoAttack`` is the exception: it runs Croce and Hein's own AutoAttack (pyautoattack) on a whole
set of examples.
"""

from .adaptive import AdaptivePGD
from .apgd import APGD, APGDT, apgd_linf, dlr_loss, targeted_dlr_loss
from .base import Attack, ce_loss, cw_loss, input_gradient, margin, project_linf
from .cw import CW
from .fab import FAB, project_onto_hyperplane_linf
from .fgsm import FGSM
from .nifgsm import NIFGSM
from .pgd import PGD, pgd_linf
from .reference_autoattack import AutoAttackResult, ReferenceAutoAttack
from .registry import attack_names, build_attack, parse_attack_name
from .square import Square

__all__ = [
    "APGD",
    "APGDT",
    "CW",
    "FAB",
    "FGSM",
    "NIFGSM",
    "PGD",
    "ReferenceAutoAttack",
    "AdaptivePGD",
    "Attack",
    "AutoAttackResult",
    "Square",
    "apgd_linf",
    "attack_names",
    "build_attack",
    "ce_loss",
    "cw_loss",
    "dlr_loss",
    "input_gradient",
    "margin",
    "parse_attack_name",
    "pgd_linf",
    "project_linf",
    "project_onto_hyperplane_linf",
    "targeted_dlr_loss",
]
