"""The robustness evaluation: every attack on the same fixed examples, the per-example worst case,
and checks for gradient masking, so that a robustness number means what it says.

``evaluate(model, images, labels, ["pgd10", "cw", "autoattack"])`` is the whole API a user needs.
Each attack runs once on the clean-correct examples, so its accuracy is the one it achieves alone;
the worst case is then the per-example AND over the attacks, exact at no extra cost.
``worst_case_only=True`` runs a cascade instead (each attack only on the examples still robust,
as AutoAttack does), which is faster but gives no per-attack accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.attacks import CW, NIFGSM, PGD, Attack, build_attack

# Attacks that ascend a loss: their adversarial loss should exceed the clean one.
_ASCENT_ATTACKS = ("FGSM", "PGD", "NIFGSM", "APGD", "APGDT", "AdaptivePGD")
_BLACK_BOX = ("Square",)


@dataclass
class AttackResult:
    """One attack's outcome on the evaluated examples (accuracies over all ``n`` of them)."""

    name: str
    params: dict[str, Any]
    accuracy: float | None  # None in a cascade (worst_case_only), where it is not the attack's alone
    n_robust: int
    n_attacked: int
    seconds: float
    attack_class: str = ""
    loss_clean: float | None = None  # mean CE on the attacked examples, before and after the attack
    loss_adv: float | None = None


@dataclass
class EvalReport:
    """Clean and robust accuracies on ``n`` examples chosen with ``seed``."""

    n: int
    seed: int
    clean: float
    worst_case: float
    attacks: list[AttackResult] = field(default_factory=list)
    worst_case_only: bool = False
    seconds: float = 0.0
    indices: Tensor | None = field(default=None, repr=False)
    robust: dict[str, Tensor] = field(default_factory=dict, repr=False)  # per-example masks

    def result(self, name: str) -> AttackResult:
        for r in self.attacks:
            if r.name == name:
                return r
        raise ValueError(f"name must be one of {[r.name for r in self.attacks]}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {
            "n": self.n, "seed": self.seed, "clean": self.clean, "worst_case": self.worst_case,
            "worst_case_only": self.worst_case_only, "seconds": self.seconds,
            "attacks": [
                {"name": r.name, "attack": r.attack_class, "params": _jsonable(r.params),
                 "accuracy": r.accuracy, "n_robust": r.n_robust, "n_attacked": r.n_attacked,
                 "seconds": r.seconds, "loss_clean": r.loss_clean, "loss_adv": r.loss_adv}
                for r in self.attacks
            ],
        }


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    plain = (int, float, str, bool, list, type(None))
    return {k: v if isinstance(v, plain) else repr(v) for k, v in params.items()}


def select_subset(num: int, n: int | None, seed: int) -> Tensor:
    """Indices of the evaluated examples: all of them, or a fixed seeded subset of ``n`` (sorted)."""
    if n is None:
        return torch.arange(num)
    if not isinstance(n, int) or n < 1 or n > num:
        raise ValueError(f"n must be an int in [1, {num}] (the number of examples) or None, got {n!r}")
    return torch.randperm(num, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _prepare(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(images, Tensor) or images.dim() < 2:
        raise ValueError(f"images must be a tensor shaped (N, C, H, W), got {type(images).__name__}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be a 1-d tensor with one label per image ({len(images)}), got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    if len(images) == 0:
        raise ValueError("images must hold at least one example, got an empty tensor")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return images, labels.long()


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _build(attacks: Mapping[str, Attack] | Sequence[str], model: nn.Module, eps: float,
           attack_params: Mapping[str, Any]) -> dict[str, Attack]:
    if isinstance(attacks, Mapping):
        for name, attack in attacks.items():
            if not isinstance(attack, Attack):
                raise ValueError(f"attacks[{name!r}] must be an ibrar Attack, got {type(attack).__name__}")
        return dict(attacks)
    if isinstance(attacks, str):
        raise ValueError(f"attacks must be a list of names or a dict of attacks, got the string {attacks!r}")
    return {name: build_attack(name, model, eps=eps, **attack_params) for name in attacks}


def _run_attack(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Attack in batches; returns per-example (robust, clean CE, adversarial CE)."""
    if len(x) == 0:  # nothing classified correctly: nothing to attack
        empty = torch.zeros(0, device=x.device)
        return empty.bool(), empty, empty
    robust, loss_clean, loss_adv = [], [], []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = attack(xb, yb)
            with torch.no_grad():
                logits_adv, logits = model(x_adv), model(xb)
            robust.append(logits_adv.argmax(1) == yb)
            loss_clean.append(F.cross_entropy(logits, yb, reduction="none"))
            loss_adv.append(F.cross_entropy(logits_adv, yb, reduction="none"))
    return torch.cat(robust), torch.cat(loss_clean), torch.cat(loss_adv)


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Mapping[str, Attack] | Sequence[str],
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    n: int | None = None,
    worst_case_only: bool = False,
    eps: float = 8 / 255,
    attack_params: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Clean accuracy, accuracy under each attack and the per-example worst case, on the same examples.

    ``attacks`` is a dict of built attacks or a list of names for :func:`ibrar.attacks.build_attack`
    (built with ``eps`` and ``attack_params``). ``images`` may be float in [0, 1] or uint8.
    Examples misclassified when clean count as broken and are never attacked. The model is put
    in eval mode and restored afterwards.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    images, labels = _prepare(images, labels)
    indices = select_subset(len(images), n, seed)
    device = torch.device(device) if device is not None else _model_device(model)
    x, y = images[indices].to(device), labels[indices].to(device)
    built = _build(attacks, model, eps, attack_params or {})

    modes = {module: module.training for module in model.modules()}
    model.eval()
    start = time.perf_counter()
    try:
        correct = _predict(model, x, batch_size).argmax(1) == y
        worst = correct.clone()
        report = EvalReport(n=len(y), seed=seed, clean=correct.float().mean().item(), worst_case=0.0,
                            worst_case_only=worst_case_only, indices=indices)
        for name, attack in built.items():
            todo = (worst if worst_case_only else correct).nonzero().squeeze(1)
            t0 = time.perf_counter()
            robust_sub, loss_clean, loss_adv = _run_attack(attack, model, x[todo], y[todo], batch_size, seed)
            seconds = time.perf_counter() - t0
            robust = torch.zeros_like(correct)
            robust[todo] = robust_sub
            worst &= robust
            report.robust[name] = robust.cpu()
            report.attacks.append(AttackResult(
                name=name, params=attack.params(), attack_class=type(attack).__name__,
                accuracy=None if worst_case_only else robust.float().mean().item(),
                n_robust=int(robust.sum()), n_attacked=len(todo), seconds=seconds,
                loss_clean=loss_clean.mean().item() if len(todo) else None,
                loss_adv=loss_adv.mean().item() if len(todo) else None,
            ))
        report.worst_case = worst.float().mean().item()
        report.seconds = time.perf_counter() - start
    finally:
        for module, training in modes.items():
            module.training = training
    return report


_FAMILIES = {
    "pgd": lambda model, eps, s: PGD(model, eps=eps, steps=s),
    "cw": lambda model, eps, s: CW(model, steps=s),
    "nifgsm": lambda model, eps, s: NIFGSM(model, eps=eps, steps=s),
}


def steps_curve(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack_family: str,
    steps: Sequence[int] = (1, 5, 10, 20, 50),
    eps: float = 8 / 255,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    n: int | None = None,
) -> dict[int, float]:
    """Robust accuracy against the number of attack steps (the paper's Figure 2)."""
    if attack_family not in _FAMILIES:
        raise ValueError(f"attack_family must be one of {sorted(_FAMILIES)}, got {attack_family!r}")
    if not steps or any(not isinstance(s, int) or s < 1 for s in steps):
        raise ValueError(f"steps must be a non-empty list of ints >= 1, got {steps!r}")
    attacks = {f"{attack_family}{s}": _FAMILIES[attack_family](model, eps, s) for s in steps}
    report = evaluate(model, images, labels, attacks, batch_size=batch_size, device=device, seed=seed, n=n)
    return {s: report.result(f"{attack_family}{s}").accuracy for s in steps}


def masking_warnings(
    report: EvalReport,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    curve: Mapping[int, float] | None = None,
    large_eps: float | None = None,
    tolerance: float = 0.02,
    batch_size: int = 256,
) -> list[str]:
    """Signs of gradient masking, each a sentence with the figures; an empty list when none is seen.

    - a black-box attack (Square) beats every white-box attack;
    - accuracy rises with the number of steps in ``curve`` (from :func:`steps_curve`);
    - an ascent attack whose mean loss did not rise (``loss_adv <= loss_clean``);
    - with ``large_eps`` (e.g. 0.5) and ``model``/``images``/``labels`` (the same ones given to
      :func:`evaluate`): PGD-20 at that radius leaves more than ``tolerance`` accuracy, which a
      model without masking cannot do.
    """
    warnings: list[str] = []
    accs = {r.name: r.accuracy for r in report.attacks if r.accuracy is not None}
    black = {r.name: accs[r.name] for r in report.attacks if r.attack_class in _BLACK_BOX and r.name in accs}
    white = {r.name: accs[r.name] for r in report.attacks
             if r.attack_class not in _BLACK_BOX and r.attack_class != "AutoAttack" and r.name in accs}
    for name, acc in black.items():
        if white and acc < min(white.values()) - tolerance:
            best = min(white, key=white.get)
            warnings.append(f"black-box {name} ({acc:.1%}) beats every white-box attack (best: {best} "
                            f"{white[best]:.1%}): gradients are likely masked")
    if curve:
        ordered = sorted(curve.items())
        for (s0, a0), (s1, a1) in zip(ordered, ordered[1:], strict=False):
            if a1 > a0 + tolerance:
                warnings.append(f"accuracy rises with more steps ({s0} steps: {a0:.1%}, {s1} steps: "
                                f"{a1:.1%}): the attack is not converging")
        (s_first, a_first), (s_last, a_last) = ordered[0], ordered[-1]
        if len(ordered) > 1 and a_first > tolerance and a_last >= a_first:
            warnings.append(f"accuracy does not fall as steps grow ({s_first} steps: {a_first:.1%}, "
                            f"{s_last} steps: {a_last:.1%})")
    for r in report.attacks:
        if r.attack_class in _ASCENT_ATTACKS and r.loss_clean is not None and r.loss_adv is not None \
                and r.loss_adv <= r.loss_clean:
            warnings.append(f"{r.name}: the loss did not rise (clean {r.loss_clean:.4f}, adversarial "
                            f"{r.loss_adv:.4f}): its gradients are uninformative")
    if large_eps is not None:
        if model is None or images is None or labels is None:
            raise ValueError("model, images and labels are needed for the large_eps check, got None")
        attack = PGD(model, eps=large_eps, alpha=large_eps / 8, steps=20)
        subset = report.n if report.n < len(images) else None  # the same seeded subset as the report's
        big = evaluate(model, images, labels, {"pgd": attack}, batch_size=batch_size, seed=report.seed,
                       n=subset)
        acc = big.result("pgd").accuracy or 0.0
        if acc > tolerance:
            warnings.append(f"PGD-20 at eps={large_eps:.3g} leaves {acc:.1%} accuracy (expected ~0%): "
                            "gradients are likely masked")
    return warnings


def format_table(report: EvalReport) -> str:
    """A plain-text table of the report for the terminal."""
    rows = [("clean", f"{report.clean:.2%}", "", "", "")]
    for r in report.attacks:
        acc = "cascade" if r.accuracy is None else f"{r.accuracy:.2%}"
        loss = "" if r.loss_clean is None else f"{r.loss_clean:.3f} -> {r.loss_adv:.3f}"
        rows.append((r.name, acc, str(r.n_robust), f"{r.seconds:.1f}s", loss))
    rows.append(("worst case", f"{report.worst_case:.2%}", str(round(report.worst_case * report.n)), "", ""))
    header = ("attack", "accuracy", "robust", "time", "CE clean -> adv")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"n = {report.n} examples, seed = {report.seed}"]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
