"""Attack names as the configs and the command line write them (``pgd10``, ``apgd-t``, ...) -> Attack objects.

A trailing number is the step count (``pgd100``, ``cw50``, ``adaptive100``).
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from .adaptive import AdaptivePGD
from .apgd import APGD, APGDT
from .base import Attack
from .cw import CW
from .fab import FAB
from .fgsm import FGSM
from .nifgsm import NIFGSM
from .pgd import PGD
from .reference_autoattack import ReferenceAutoAttack
from .square import Square

# family -> (default steps or None when a number is not accepted, builder(model, eps, steps, **params))
_FAMILIES: dict[str, tuple[int | None, Any]] = {
    "fgsm": (None, lambda m, eps, s, **p: FGSM(m, eps=eps, **p)),
    "pgd": (10, lambda m, eps, s, **p: PGD(m, eps=eps, steps=s, **p)),
    "cw": (200, lambda m, eps, s, **p: CW(m, steps=s, **p)),
    "fab": (10, lambda m, eps, s, **p: FAB(m, eps=eps, steps=s, **p)),
    "fab-t": (10, lambda m, eps, s, **p: FAB(m, eps=eps, steps=s, targeted=True, **p)),
    "nifgsm": (10, lambda m, eps, s, **p: NIFGSM(m, eps=eps, steps=s, **p)),
    "apgd-ce": (100, lambda m, eps, s, **p: APGD(m, eps=eps, steps=s, loss="ce", **p)),
    "apgd-dlr": (100, lambda m, eps, s, **p: APGD(m, eps=eps, steps=s, loss="dlr", **p)),
    "apgd-t": (100, lambda m, eps, s, **p: APGDT(m, eps=eps, steps=s, **p)),
    "square": (None, lambda m, eps, s, **p: Square(m, eps=eps, **p)),
    # Croce and Hein's own code (pyautoattack), standard version: see reference_autoattack.py.
    "autoattack": (None, lambda m, eps, s, **p: ReferenceAutoAttack(m, eps=eps, **p)),
    "adaptive": (10, lambda m, eps, s, **p: AdaptivePGD(m, eps=eps, steps=s, **p)),
}

_NAME = re.compile(r"^(?P<family>[a-z-]+?)(?P<steps>\d+)?$")


def attack_names() -> list[str]:
    """The accepted name patterns, for error messages and help texts."""
    return [f"{family}[N]" if steps is not None else family for family, (steps, _) in _FAMILIES.items()]


def parse_attack_name(name: str) -> tuple[str, int | None]:
    """``"pgd100"`` -> ``("pgd", 100)``; ``"pgd"`` -> ``("pgd", 10)``; ``"fgsm"`` -> ``("fgsm", None)``."""
    match = _NAME.match(name.strip().lower()) if isinstance(name, str) else None
    family = match["family"] if match else None
    if family not in _FAMILIES:
        raise ValueError(f"name must be one of {attack_names()} (N = number of steps), got {name!r}")
    default_steps = _FAMILIES[family][0]
    if match["steps"] is not None:
        if default_steps is None:
            raise ValueError(f"name: {family!r} takes no step count, got {name!r}")
        steps = int(match["steps"])
        if steps < 1:
            raise ValueError(f"name: the step count must be >= 1, got {name!r}")
        return family, steps
    return family, default_steps


def build_attack(name: str, model: nn.Module, eps: float = 8 / 255,
                 **run_params: Any) -> Attack | ReferenceAutoAttack:
    """Build the attack a name denotes; ``run_params`` go to its constructor (e.g. ``seed``,
    ``regularizer`` for ``adaptive``, ``alpha``, ``restarts``). ``autoattack`` is the reference's
    evaluation (:class:`ReferenceAutoAttack`), which runs on a whole set of examples, not per batch."""
    family, steps = parse_attack_name(name)
    if family == "adaptive" and "regularizer" not in run_params:
        raise ValueError("regularizer: the adaptive attack needs the model's IBRegularizer, got none")
    return _FAMILIES[family][1](model, eps, steps, **run_params)
