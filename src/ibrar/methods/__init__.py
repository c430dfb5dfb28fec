"""Training objectives, one file each, picked by name: `build_method("trades", beta=6.0)`.

Each method makes its adversarial examples (`perturb`) and turns logits into its loss (`loss`); the trainer
adds the IB-RAR penalty on top.
"""

from __future__ import annotations

import inspect

from ibrar.methods.base import Forward, Method, MethodOutput, eval_mode
from ibrar.methods.ce import CrossEntropy
from ibrar.methods.mart import MART
from ibrar.methods.pgd_at import PGDAT
from ibrar.methods.trades import TRADES
from ibrar.methods.vib import VIB, VIBClassifier, infer_feature_dim

METHODS: dict[str, type[Method]] = {
    "ce": CrossEntropy,
    "pgd_at": PGDAT,
    "trades": TRADES,
    "mart": MART,
    "vib": VIB,
}


def build_method(name: str, **params: object) -> Method:
    """The method called `name`, built with `params`; unknown names or parameters are a ValueError."""
    if name not in METHODS:
        raise ValueError(f"name: unknown method {name!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of method {name!r}; it accepts {accepted}")
    return cls(**params)


__all__ = [
    "MART",
    "METHODS",
    "PGDAT",
    "TRADES",
    "VIB",
    "CrossEntropy",
    "Forward",
    "Method",
    "MethodOutput",
    "VIBClassifier",
    "build_method",
    "eval_mode",
    "infer_feature_dim",
]
